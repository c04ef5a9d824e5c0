"""Load for the e2e tests and benchmarks: a steady background of today's usage at a fixed
event rate, ingest's capacity flat out, and the mixed soak built from both."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from tests.e2e.flows import collapse_history, make_csm, post_calls
from tests.e2e.harness import Running
from tests.support import auth, http_client


@dataclass
class LoadStats:
    events: int = 0
    requests: int = 0
    errors: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0


async def steady_load(
    ingest: str,
    *,
    accounts: int,
    rate: float,
    seconds: float,
    batch: int = 50,
    prefix: str = "load",
    stop: asyncio.Event | None = None,
) -> LoadStats:
    """Post ``rate`` events/s (in batches of ``batch``) for ``seconds`` or until ``stop`` is
    set; count what came back (``stats.seconds``: how long it ran)."""
    stats = LoadStats()
    began = time.monotonic()
    counter = itertools.count()
    interval = batch / rate
    deadline = time.monotonic() + seconds
    async with http_client(base_url=ingest, headers=auth("ingest"), timeout=30) as client:

        async def one() -> None:
            n = next(counter)
            events = [
                {
                    "type": "track",
                    "userId": f"{prefix}-user-{(n * batch + i) % 97}",
                    "event": "Report Created",
                    "groupId": f"{prefix}-acct-{(n + i) % accounts}",
                    "messageId": f"{prefix}-{n}-{i}",
                }
                for i in range(batch)
            ]
            started = time.monotonic()
            r = await client.post("/v1/batch", json={"batch": events})
            stats.latencies.append(time.monotonic() - started)
            stats.requests += 1
            if r.status_code == 200:
                stats.events += batch
            else:
                stats.errors[r.status_code] = stats.errors.get(r.status_code, 0) + 1

        tasks: set[asyncio.Task[None]] = set()
        next_at = time.monotonic()
        while next_at < deadline and not (stop is not None and stop.is_set()):
            task = asyncio.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        if tasks:
            await asyncio.gather(*tasks)
    stats.seconds = time.monotonic() - began
    return stats


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass
class Capacity:
    rate: float  # events/s accepted
    refused: dict[str, int]  # batches not accepted: by status code, or by transport error


async def capacity(ingest: str, *, seconds: float = 5.0, concurrency: int = 8) -> Capacity:
    """Events/s ingest accepts flat out (100-event batches from ``concurrency`` clients):
    the soak runs at a share of this, measured on the machine at hand. A batch refused or
    cut off (ingest at saturation closed a connection once) is counted, not raised: it
    took the probe down, with a traceback, before."""
    accepted = 0
    refused: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    async with http_client(base_url=ingest, headers=auth("ingest"), timeout=30) as client:

        async def poster(worker: int) -> None:
            nonlocal accepted
            for n in itertools.count():
                if time.monotonic() >= deadline:
                    return
                events = [
                    {
                        "type": "track",
                        "userId": f"cap-user-{i % 50}",
                        "event": "Capacity Probe",
                        "groupId": f"cap-acct-{(n + i) % 20}",
                        "messageId": f"cap-{worker}-{n}-{i}",
                    }
                    for i in range(100)
                ]
                try:
                    r = await client.post("/v1/batch", json={"batch": events})
                except httpx.TransportError as exc:
                    refused[type(exc).__name__] += 1
                    await asyncio.sleep(0.05)  # not flat out against a server that is down
                    continue
                if r.status_code == 200:
                    accepted += len(events)
                else:
                    refused[str(r.status_code)] += 1

        started = time.monotonic()
        await asyncio.gather(*(poster(w) for w in range(concurrency)))
    if not accepted:
        raise RuntimeError(f"ingest accepted no batch in {seconds:.0f} s: {dict(refused)}")
    return Capacity(accepted / (time.monotonic() - started), dict(refused))


@dataclass
class SoakResult:
    rate: float
    load: LoadStats
    reads: int = 0
    read_errors: int = 0
    flows_started: list[str] = field(default_factory=list)
    rss: list[dict[str, int]] = field(default_factory=list)  # one sample per mark

    def growth(self) -> dict[str, int]:
        """Memory added per service from the first sample to the last."""
        first, last = self.rss[0], self.rss[-1]
        return {name: last[name] - first[name] for name in first}


READ_PATHS = [
    ("health", "/v1/accounts"),
    ("health", "/v1/alerts"),
    ("playbooks", "/v1/task-groups"),
    ("playbooks", "/v1/stats"),
    ("notify", "/v1/deliveries"),
]


async def soak(
    running: Running,
    *,
    seconds: float,
    rate: float,
    flow_every: float = 10.0,
    mark_every: float = 30.0,
    on_mark: Callable[[float, dict[str, int]], None] | None = None,
) -> SoakResult:
    """Mixed load for ``seconds``: steady usage at ``rate`` events/s, REST reads of every
    service each second, and every ``flow_every`` s an account whose usage collapses (an
    alert, a task group, an email and a Slack message each). Samples each service's
    memory every ``mark_every`` s (and at both ends)."""
    procs = running.system.processes
    result = SoakResult(rate=rate, load=LoadStats())

    def sample() -> dict[str, int]:
        return {name: rss_bytes(p.pid) for name, p in procs.items()}

    async def readers(client: httpx.AsyncClient, deadline: float) -> None:
        while time.monotonic() < deadline:
            for service, path in READ_PATHS:
                r = await client.get(f"{running.url(service)}{path}")
                result.reads += 1
                result.read_errors += r.status_code != 200
            await asyncio.sleep(1)

    async def start_flow() -> None:
        account = f"soak-flow-{uuid.uuid4().hex[:8]}"
        owner = f"owner@{account}.test"
        await make_csm(running.url("playbooks"), owner, f"U-{account}")
        history = collapse_history(account, owner=owner, contact=f"casey@{account}.test")
        await post_calls(running.url("ingest"), history)
        result.flows_started.append(account)

    async def flows(deadline: float) -> None:
        # one flow every ``flow_every`` seconds by the clock, however long posting one takes
        # on a busy machine: the count started depends on the duration only
        started: list[asyncio.Task[None]] = []
        next_at = time.monotonic()
        while next_at + flow_every < deadline:
            started.append(asyncio.create_task(start_flow()))
            next_at += flow_every
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await asyncio.gather(*started)

    async def marks(deadline: float) -> None:
        started = time.monotonic()
        next_mark = started + mark_every
        while next_mark < deadline:
            await asyncio.sleep(max(0.0, next_mark - time.monotonic()))
            result.rss.append(sample())
            if on_mark is not None:
                on_mark(time.monotonic() - started, result.rss[-1])
            next_mark += mark_every

    result.rss.append(sample())
    deadline = time.monotonic() + seconds
    async with http_client(headers=auth("read"), timeout=30) as client:
        result.load, *_ = await asyncio.gather(
            steady_load(running.url("ingest"), accounts=200, rate=rate, seconds=seconds),
            readers(client, deadline),
            flows(deadline),
            marks(deadline),
        )
    result.rss.append(sample())
    return result


def flows_delivered(running: Running, accounts: list[str]) -> list[str]:
    """The collapsed accounts whose check-in email and owner Slack message both arrived."""
    slack_channels = {m.get("channel") for m in running.slack.messages}
    return [
        a for a in accounts if running.smtp.to(f"casey@{a}.test") and f"U-{a}" in slack_channels
    ]
