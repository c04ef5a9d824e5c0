"""Each service scales on its own: two replicas each of health, playbooks and notify (own
processes, one PostgreSQL database per service shared by its replicas, one consumer group
per service, the real broker), under steady load with usage-collapse flows. One replica of
each is SIGKILLed mid-load (and replaced), a third is added and then SIGTERMed while
batches are in flight. Once the system is quiet, everything is counted: every accepted
event stored once, every alert in exactly one task group, every step email sent once and
no more than the per-contact cap to anyone, every scheduled step sent once. A second,
shorter test races three notify processes on the same contacts at one instant."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka.partitioner import DefaultPartitioner

from services.playbooks.library import builtin_templates
from services.playbooks.templates import matches_alert
from shared import topics
from shared.envelope import Envelope, wrap
from shared.kafka import Publisher
from shared.messages import NotifyRequested, Recipient
from shared.migrations import upgrade_async
from tests.conftest import DatabaseFactory
from tests.e2e.flows import collapse_history, events_counted, eventually, make_csm, post_calls
from tests.e2e.load import steady_load
from tests.e2e.replicas import (
    GROUP_TOPICS,
    Cluster,
    RecordingSmtp,
    Replica,
    end_offsets,
    lag,
    read_all,
    replicated_system,
    wait_ready,
)
from tests.support import auth, http_client

SERVICES = ("ingest", "health", "playbooks", "notify")
SCALED = ("health", "playbooks", "notify")
WAVES = 3
PER_WAVE = 6  # collapse accounts per wave: the first SHARING share one contact
SHARING = 3
CAP = 1  # NOTIFY_FREQUENCY_CAP, as shipped: one automated email per contact...
WINDOW = 12.0  # ...per NOTIFY_FREQUENCY_CAP_WINDOW (s; a day as shipped): the held ones go
SEND_TIME = 4.0  # at most between a slot and the SMTP server's copy, on a loaded machine
PARTITIONS = 6
COLLAPSE_RULES = {"band_drop", "score_drop", "metric_decline"}
# More than a partition's handover takes (a SIGKILLed consumer's 4 s session timeout, then
# the rebalance): while a partition has no owner, nobody renews the backlog hold, so only
# the settle delay keeps a half-consumed history from being judged (30 s by default).
SETTLE = 15
KILL_GRACE = 2.0  # s: see straddles()
LEASE = 10  # NOTIFY_SEND_LEASE (s): a killed replica's claimed deliveries come back


@dataclass(frozen=True)
class Flow:
    account: str
    owner: str
    contact: str
    wave: int
    shared: bool

    @property
    def slack_id(self) -> str:
        return f"U-{self.account}"


def on_partition(prefix: str, partition: int) -> str:
    """An account id that the publishers' partitioner (murmur2 of the key) puts on
    ``partition``."""
    every = list(range(PARTITIONS))
    for n in itertools.count():
        account = f"{prefix}-{n}"
        if DefaultPartitioner()(account.encode(), every, every) == partition:
            return account
    raise AssertionError("unreachable")


def plan(run: str) -> list[list[Flow]]:
    """Waves of collapsing accounts; in each wave ``SHARING`` accounts have the same
    contact (one person at several customers), so several check-in emails for one
    address reach notify at once. Those accounts are on neighbouring partitions, which
    the round-robin assignor gives to different replicas of a group."""
    waves = []
    for w in range(WAVES):
        flows = []
        for i in range(PER_WAVE):
            shared = i < SHARING
            account = on_partition(f"{run}-w{w}-{i}", i) if shared else f"{run}-w{w}-{i}"
            contact = f"shared-w{w}@{run}.test" if shared else f"casey@{account}.test"
            flows.append(Flow(account, f"owner@{account}.test", contact, w, shared))
        waves.append(flows)
    return waves


def histories(flows: list[Flow]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The wave's calls, interleaved by time as a real stream is, and the track events
    each account should end up with."""
    calls: list[dict[str, Any]] = []
    tracked: dict[str, int] = {}
    for f in flows:
        history = collapse_history(f.account, owner=f.owner, contact=f.contact)
        tracked[f.account] = sum(1 for c in history if c["type"] == "track")
        calls += history
    calls.sort(key=lambda c: c["timestamp"])
    return calls, tracked


async def get(url: str, **params: Any) -> Any:
    async with http_client(headers=auth("read"), timeout=30) as client:
        r = await client.get(url, params=params)
        r.raise_for_status()
        return r.json()


async def paged(url: str, *, page: int, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        body = await get(url, limit=page, offset=len(items), **params)
        items += body["items"]
        if len(body["items"]) < page:
            return items


async def kill_when(
    cluster: Cluster, service: str, started: Callable[[], Awaitable[bool]], what: str
) -> None:
    """SIGKILL the oldest replica of ``service`` once it is working on the flows, and
    start its replacement (as a Deployment would)."""
    await eventually(started, timeout=180, what=what)
    victim = cluster.live(service)[0]
    cluster.kill(victim)
    replacement = await cluster.start(service)
    print(f"{victim.name} SIGKILLed, {replacement.name} ready")


async def consumed(replica: Replica) -> float:
    """Messages the replica's consumer group runner has consumed and committed."""
    async with http_client(timeout=10) as client:
        text = (await client.get(f"{replica.url}/metrics")).text
    mine = f'uptake_kafka_consumed_total{{group="{replica.service}"}} '
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(mine))


def handled_by(cluster: Cluster) -> dict[str, set[str]]:
    """delivery id -> the notify replicas whose worker sent or deferred it (their logs)."""
    seen: dict[str, set[str]] = defaultdict(set)
    for r in cluster.replicas:
        if r.service != "notify":
            continue
        for line in r.log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") in ("notify.delivery", "notify.deferred"):
                seen[entry["delivery"]].add(r.name)
    return seen


def within_cap(times: list[float], window: float) -> bool:
    """No more than ``CAP`` of these (sorted) times in any ``window``."""
    pairs = zip(times, times[CAP:], strict=False)
    return all(later - earlier >= window for earlier, later in pairs)


async def cap_slots(database_url: str, ids: list[str]) -> dict[str, float]:
    """When each delivery took its cap slot (``capped_at``: set under the cap lock)."""
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        rows = await conn.fetch(
            "SELECT id, capped_at FROM deliveries WHERE id = ANY($1::text[])", ids
        )
    finally:
        await conn.close()
    return {r["id"]: r["capped_at"].timestamp() for r in rows}


def straddles(times: list[float], cuts: list[float]) -> bool:
    """Two copies around a SIGKILL: the one repeat the design allows (published or sent,
    then killed before the mark was committed; the other replica goes again). The first
    copy may be taken in a moment after the kill (the server had the bytes already)."""
    first, last = min(times), max(times)
    return len(times) == 2 and any(first <= cut + KILL_GRACE and cut <= last for cut in cuts)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.broker
@pytest.mark.timeout(600)
async def test_replicas_scale_out_killed_added_and_removed_mid_load(
    postgres_databases: DatabaseFactory, tmp_path: Path
) -> None:
    began = time.monotonic()
    run = f"rep{uuid.uuid4().hex[:6]}"
    urls = {s: await postgres_databases(s) for s in SERVICES}
    for service, url in urls.items():  # the migrate job: replicas run AUTO_MIGRATE=false
        await upgrade_async(service, url)
    smtp = RecordingSmtp(delay=0.3)
    smtp.controller.start()
    try:
        async with replicated_system(
            tmp_path,
            smtp,
            urls,
            {"ingest": 1, "health": 2, "playbooks": 2, "notify": 2},
            partitions=PARTITIONS,
            NOTIFY_FREQUENCY_CAP=str(CAP),
            NOTIFY_FREQUENCY_CAP_WINDOW=str(WINDOW),
            NOTIFY_SEND_LEASE=str(LEASE),
            # every playbooks replica looks for due steps five times a second: their
            # schedulers' passes overlap all the time
            PLAYBOOKS_SCHEDULER_INTERVAL="0.2",
            HEALTH_SETTLE_SECONDS=str(SETTLE),
            # notify's log says which replica sent or deferred each delivery
            service_env={"notify": {"LOG_LEVEL": "INFO"}},
        ) as cluster:
            await _exercise_and_count(cluster, run, began)
    finally:
        smtp.controller.stop()


async def _exercise_and_count(cluster: Cluster, run: str, began: float) -> None:
    def phase(name: str) -> None:
        print(f"{time.monotonic() - began:6.1f}s {name}")  # shown with -s or on failure

    phase("system ready")
    waves = plan(run)
    flows = [f for wave in waves for f in wave]
    for f in flows:
        await make_csm(cluster.url("playbooks"), f.owner, f.slack_id)
    stop_load = asyncio.Event()
    load = asyncio.create_task(
        steady_load(
            cluster.url("ingest"),
            accounts=12,
            rate=40,
            seconds=600,
            batch=20,
            prefix=f"{run}-load",
            stop=stop_load,
        )
    )
    tracked: dict[str, int] = {}

    async def post(wave: list[Flow]) -> None:
        calls, counts = histories(wave)
        tracked.update(counts)
        assert await post_calls(cluster.url("ingest"), calls, batch=100) == len(calls)

    async def counting(account: str) -> bool:
        return await events_counted(cluster.url("health"), account) > 0

    async def grouped(wave: list[Flow]) -> bool:
        page = await get(f"{cluster.url('playbooks')}/v1/task-groups", limit=500)
        return any(g["account_id"] in {f.account for f in wave} for g in page["items"])

    def emailed(wave: list[Flow]) -> bool:
        return any(smtp_to(cluster, f.contact) for f in wave)

    # 1. Wave 0 under steady load; one replica of each service is SIGKILLed while it works
    # on the wave (health consuming its events, playbooks starting its groups, notify
    # sending its emails), and replaced.
    w0 = waves[0]
    await asyncio.gather(
        post(w0),
        kill_when(cluster, "health", lambda: counting(w0[0].account), "health on wave 0"),
        kill_when(cluster, "playbooks", lambda: grouped(w0), "playbooks on wave 0"),
        kill_when(cluster, "notify", _sync(lambda: emailed(w0)), "notify on wave 0"),
    )
    phase("wave 0: one replica of each killed and replaced")
    # 2. Wave 1: a third replica of each joins while its events stream in, and takes a
    # share of the work (its group rebalanced onto it).
    w1 = waves[1]

    async def scale_up() -> list[Replica]:
        await eventually(lambda: counting(w1[0].account), timeout=120, what="wave 1 counted")
        thirds = [cluster.spawn(s) for s in SCALED]
        await wait_ready(thirds)
        return thirds

    _, thirds = await asyncio.gather(post(w1), scale_up())
    health3, playbooks3, notify3 = thirds

    async def consuming(*replicas: Replica) -> bool:
        return all([await consumed(r) > 0 for r in replicas])

    # (the steady load reaches every partition of usage.events.v1)
    await eventually(lambda: consuming(health3, playbooks3), timeout=120, what="thirds consume")
    phase("wave 1: third replicas joined")
    # 3. Wave 2: the third replicas leave (SIGTERM) mid-stream: health's and playbooks'
    # while wave 2's events stream in, notify's once it took some of wave 2's requests
    # (its shared accounts are on three neighbouring partitions: one is notify's third's).
    w2 = waves[2]

    async def notify_busy() -> bool:
        return emailed(w2) and await consuming(notify3)

    async def scale_down() -> None:
        await eventually(lambda: counting(w2[0].account), timeout=120, what="wave 2 counted")
        await asyncio.gather(cluster.terminate(health3), cluster.terminate(playbooks3))
        await eventually(notify_busy, timeout=120, what="notify's third on wave 2")
        await cluster.terminate(notify3)

    await asyncio.gather(post(w2), scale_down())
    phase("wave 2: third replicas left")
    stop_load.set()
    steady = await load
    assert steady.errors == {}, steady.errors
    assert steady.events > 0

    # Every flow has come through (its emails sent, those the cap held once their window
    # passed; its owner's Slack message sent), then the whole system goes quiet.
    await eventually(lambda: _flows_done(cluster, flows), timeout=240, what="every flow done")
    phase("every flow done")
    quiet = Quiet(cluster)
    try:
        await eventually(quiet, timeout=180, what="quiescence")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {quiet.why}") from None
    phase("quiet")

    await _count_events(cluster, flows, tracked, steady.events, run)
    await _count_groups(cluster, flows)
    await _count_sends(cluster, flows)
    assert time.monotonic() - began < 400, "took too long"


def _sync(probe: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def probe_async() -> bool:
        return probe()

    return probe_async


def smtp_to(cluster: Cluster, address: str) -> list[Any]:
    return [a for a in cluster.smtp.snapshot() if address.lower() in a.recipients]


async def _flows_done(cluster: Cluster, flows: list[Flow]) -> bool:
    notify = cluster.url("notify")
    for f in flows:
        items = (await get(f"{notify}/v1/deliveries", account_id=f.account))["items"]
        channels = {d["channel"] for d in items}
        if channels != {"email", "slack"} or any(d["status"] != "sent" for d in items):
            return False
    return True


class Quiet:
    """The probe for quiescence: consumer lag zero for every group, nothing in flight in
    notify or due in playbooks, no account waiting to be judged in health, and nothing
    new (offsets, emails, Slack messages) since the last look. ``why`` says what was still
    going on at the last look."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.consumed = sorted({t for names in GROUP_TOPICS.values() for t in names})
        self.last: Any = None
        self.why = "not looked yet"

    async def __call__(self) -> bool:
        busy = await self._busy()
        if busy:
            self.why, self.last = busy, None
            return False
        ends = await end_offsets(self.cluster.broker.bootstrap_servers, self.consumed)
        snapshot = (ends, len(self.cluster.smtp.snapshot()), len(self.cluster.slack.messages))
        same, self.last = snapshot == self.last, snapshot
        self.why = "changed since the last look"
        return same

    async def _busy(self) -> str | None:
        cluster, bootstrap = self.cluster, self.cluster.broker.bootstrap_servers
        ends = await end_offsets(bootstrap, self.consumed)
        for group in GROUP_TOPICS:
            if behind := await lag(bootstrap, group, ends):
                return f"group {group} is {behind} behind"
        notify = cluster.url("notify")
        for status in ("queued", "sending", "retrying", "deferred"):
            items = (await get(f"{notify}/v1/deliveries", status=status, limit=5))["items"]
            if items:
                return f"notify deliveries {status}: {items}"
        tasks = await paged(f"{cluster.url('playbooks')}/v1/tasks", page=500, status="open")
        if pending := [t for t in tasks if t["pending_send"]]:
            return f"playbooks steps pending: {pending[:3]}"
        async with http_client(timeout=10) as client:
            for r in cluster.live("health"):
                for line in (await client.get(f"{r.url}/metrics")).text.splitlines():
                    if line.startswith("uptake_health_accounts_pending ") and float(
                        line.split()[1]
                    ):
                        return f"{r.name}: {line}"
        return None


async def _count_events(
    cluster: Cluster, flows: list[Flow], tracked: dict[str, int], steady: int, run: str
) -> None:
    """Every event ingest accepted is in health's rollups exactly once."""
    health = cluster.url("health")
    counted = {f.account: await events_counted(health, f.account) for f in flows}
    assert counted == {f.account: tracked[f.account] for f in flows}
    load = [await events_counted(health, f"{run}-load-acct-{i}") for i in range(12)]
    assert sum(load) == steady, (load, steady)


async def _count_groups(cluster: Cluster, flows: list[Flow]) -> None:
    """Every alert started exactly one task group of each playbook it matches (and one
    group takes all of an account's alerts for that playbook: never two for one trigger)."""
    health, playbooks = cluster.url("health"), cluster.url("playbooks")
    templates = builtin_templates()
    rules_seen: Counter[str] = Counter()
    plays_seen: Counter[str] = Counter()
    for f in flows:
        alerts = (await get(f"{health}/v1/alerts", account_id=f.account, limit=1000))["items"]
        rules = [a["rule_id"] for a in alerts]
        assert rules and len(rules) == len(set(rules)), alerts  # one per (account, rule)
        # judged on the whole history only, kills and rebalances notwithstanding: 7 silent
        # days are no 14-day inactivity, and nothing opened on part of it then resolved
        assert {a["rule_type"] for a in alerts} <= COLLAPSE_RULES, alerts
        assert all(a["status"] == "open" for a in alerts), alerts
        groups = await paged(f"{playbooks}/v1/task-groups", page=500, account_id=f.account)
        expected: Counter[str] = Counter()
        for a in alerts:
            if a["status"] in ("deferred", "snoozed"):
                continue
            for t in templates:
                if not t.conditions and matches_alert(
                    t, rule_type=a["rule_type"], rule_id=a["rule_id"], severity=a["severity"]
                ):
                    expected[t.id] += 1
        got = Counter(g["playbook_id"] for g in groups)
        assert set(got) == set(expected) and max(got.values()) == 1, (alerts, groups)
        rules_seen.update(a["rule_type"] for a in alerts)
        plays_seen.update(got)
        triggers = {g["playbook_id"]: g["triggers"] for g in groups}
        assert triggers == dict(expected), (alerts, groups)
        assert "adoption-risk" in got
    print(f"alerts {dict(rules_seen)}, task groups {dict(plays_seen)}")


async def _count_sends(cluster: Cluster, flows: list[Flow]) -> None:
    """Each step playbooks sent reached notify once; each email arrived once (by
    Message-ID) and never more than the cap to one address; each Slack message once; each
    scheduled step was published once."""
    playbooks, notify = cluster.url("playbooks"), cluster.url("notify")
    kills = {
        s: [r.stopped_at for r in cluster.replicas if r.service == s and r.how == "killed"]
        for s in SCALED
    }
    sent_steps: dict[str, str] = {}  # idempotency key -> type, for every step playbooks sent
    deliveries: list[dict[str, Any]] = []
    for f in flows:
        tasks = await paged(f"{playbooks}/v1/tasks", page=500, account_id=f.account)
        for t in tasks:
            if t["type"] in ("email", "slack") and t["sent_at"] is not None:
                sent_steps[f"{t['task_group_id']}:{t['step_key']}"] = t["type"]
        deliveries += (await get(f"{notify}/v1/deliveries", account_id=f.account))["items"]

    # notify logged each step once per recipient (one contact / the owner each)
    keys = Counter(d["idempotency_key"] for d in deliveries)
    assert keys == Counter(sent_steps.keys()), (keys, sent_steps)
    assert {d["idempotency_key"]: d["channel"] for d in deliveries} == sent_steps

    # the scheduler: every step on notify.requests.v1 once; a repeat only across a kill
    published: dict[str, list[float]] = defaultdict(list)
    for rec in await read_all(cluster.broker.bootstrap_servers, topics.NOTIFY_REQUESTS):
        produced = rec.envelope.produced_at
        published[rec.envelope.id].append(_ts(produced))
    ours = {k: v for k, v in published.items() if k in sent_steps}
    assert set(ours) == set(sent_steps)
    repeats = {k: v for k, v in ours.items() if len(v) > 1}
    assert all(straddles(v, kills["playbooks"]) for v in repeats.values()), (repeats, kills)

    # emails: every one sent (the cap defers, never drops), once per Message-ID
    emails = [d for d in deliveries if d["channel"] == "email"]
    assert {d["status"] for d in emails} == {"sent"}, emails
    contacts = {f.contact.lower() for f in flows}
    arrivals = [a for a in cluster.smtp.snapshot() if set(a.recipients) & contacts]
    copies: dict[str, list[float]] = defaultdict(list)
    for a in arrivals:
        copies[a.message_id].append(a.at)
    assert set(copies) == {d["message_id"] for d in emails}, (copies, emails)
    assert len(copies) == sum(t == "email" for t in sent_steps.values())
    # SMTP has no idempotency key: a message accepted just before notify was SIGKILLed,
    # not yet marked sent, goes again after the lease with the same Message-ID
    doubled = {m: t for m, t in copies.items() if len(t) > 1}
    assert all(straddles(t, kills["notify"]) for t in doubled.values()), (doubled, kills)

    # the per-contact cap, across replicas: at most CAP emails to one address in any
    # WINDOW, by the slots notify took (exact) and by arrival at the SMTP server (give or
    # take the time a send takes)
    by_contact: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in emails:
        by_contact[d["recipient"]].append(d)
    assert set(by_contact) == contacts
    slots = await cap_slots(cluster.env["NOTIFY_DATABASE_URL"], [d["id"] for d in emails])
    first_arrival = {m: min(t) for m, t in copies.items()}
    for contact, ds in by_contact.items():
        assert within_cap(sorted(slots[d["id"]] for d in ds), WINDOW), (contact, ds)
        arrived = sorted(first_arrival[d["message_id"]] for d in ds)
        assert within_cap(arrived, WINDOW - SEND_TIME), (contact, arrived)
    shared = [f.contact for f in flows if f.shared]
    for c in shared:  # each of its accounts' check-in (an inactivity play may add one)
        assert len(by_contact[c]) >= SHARING, by_contact[c]
    # ...and the contention was real: some shared contact's emails were sent or deferred
    # by more than one notify replica
    seen = handled_by(cluster)
    spread = {c: set().union(*(seen[d["id"]] for d in by_contact[c])) for c in set(shared)}
    assert any(len(names) > 1 for names in spread.values()), spread
    print(
        f"steps sent {len(sent_steps)}, emails {len(emails)} (deferred first: "
        f"{sum(d['deferrals'] > 0 for d in emails)}), requests repeated {len(repeats)}, "
        f"emails doubled "
        f"{len(doubled)}, shared contacts' replicas {sorted(map(sorted, spread.values()))}"
    )

    # Slack: one message per Slack delivery (a resend after a kill finds its metadata)
    slack = Counter(
        (m.get("metadata") or {}).get("event_payload", {}).get("delivery_id")
        for m in cluster.slack.messages
    )
    for d in deliveries:
        if d["channel"] == "slack":
            assert slack[d["id"]] == 1, d


def _ts(value: datetime | str) -> float:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.timestamp()


POPULAR = 40  # addresses, each emailed from one account on every partition, all at once


@pytest.mark.postgres
@pytest.mark.broker
@pytest.mark.timeout(300)
async def test_three_notify_processes_racing_on_the_same_contacts_send_each_one_email(
    postgres_databases: DatabaseFactory, tmp_path: Path
) -> None:
    """The per-contact cap under real contention: three notify processes on one
    PostgreSQL database, each holding two of the six partitions, and a burst of emails
    to the same people published at once on every partition (each person's in a row, so
    every process's worker gets to the same person at about the same moment as the
    others). Exactly one email per person is sent; every other one is deferred."""
    url = await postgres_databases("notify")
    await upgrade_async("notify", url)
    smtp = RecordingSmtp()
    smtp.controller.start()
    run = uuid.uuid4().hex[:8]
    people = [f"popular-{n}-{run}@customer.test" for n in range(POPULAR)]
    try:
        async with replicated_system(
            tmp_path,
            smtp,
            {"notify": url},
            {"notify": 3},
            partitions=PARTITIONS,
            NOTIFY_FREQUENCY_CAP="1",
            NOTIFY_FREQUENCY_CAP_WINDOW="3600",
            NOTIFY_ACCOUNT_CAP="0",
            LOG_LEVEL="INFO",
        ) as cluster:
            accounts = [on_partition(f"acct-{run}-{p}", p) for p in range(PARTITIONS)]
            publisher = Publisher(cluster.broker.bootstrap_servers, client_id="tests-burst")
            await publisher.start()
            try:
                # one email per partition, to people of their own, until every process
                # has consumed some: the group has spread its partitions over all three
                warm = [checkin(a, f"warm-{a}@customer.test") for a in accounts]
                await publisher.publish_many((topics.NOTIFY_REQUESTS, e) for e in warm)

                async def spread() -> bool:
                    return all([await consumed(r) > 0 for r in cluster.live("notify")])

                await eventually(spread, timeout=90, what="each process holding partitions")
                burst = [checkin(a, person) for person in people for a in accounts]
                await publisher.publish_many((topics.NOTIFY_REQUESTS, e) for e in burst)
            finally:
                await publisher.stop()
            notify = cluster.url("notify")

            async def settled() -> list[dict[str, Any]] | None:
                items = [
                    d
                    for d in await paged(f"{notify}/v1/deliveries", page=1000)
                    if d["recipient"] in people
                ]
                done = all(d["status"] in ("sent", "deferred") for d in items)
                return items if len(items) == len(burst) and done else None

            deliveries = await eventually(settled, timeout=120, what="the burst checked")
            sent = Counter(d["recipient"] for d in deliveries if d["status"] == "sent")
            assert sent == dict.fromkeys(people, 1), sent
            for person in people:
                assert len({a.message_id for a in smtp_to(cluster, person)}) == 1, person
            sent_at = {d["recipient"]: _ts(d["sent_at"]) for d in deliveries if d["sent_at"]}
            for d in deliveries:
                if d["status"] == "deferred":
                    assert d["last_error"].startswith("frequency cap: next allowed"), d
                    assert _ts(d["next_attempt_at"]) >= sent_at[d["recipient"]] + 3600 - 5, d
            # the race was real: every process's worker checked some of each person's
            seen = handled_by(cluster)
            for person in people:
                mine = [d for d in deliveries if d["recipient"] == person]
                assert len(set().union(*(seen[d["id"]] for d in mine))) > 1, person
    finally:
        smtp.controller.stop()


def checkin(account: str, address: str) -> Envelope:
    """A check-in email request, as playbooks' scheduler publishes it."""
    request = NotifyRequested(
        idempotency_key=f"tg-{uuid.uuid4().hex[:12]}:checkin-email",
        channel="email",
        template_id="adoption-checkin",
        to=[Recipient(email=address, name="Pat Popular")],
        context={"account_name": account},
    )
    return wrap(request, type="notify.requested", account_id=account, source="tests")
