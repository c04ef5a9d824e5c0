"""Faults: a consumer killed mid-stream, the broker stalled under load. Nothing accepted is
lost and nothing is doubled: counted at the end, per account, in every service."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from shared.supervisor import start_service, wait_ready
from tests.e2e.flows import (
    collapse_history,
    events_counted,
    eventually,
    get_json,
    make_csm,
    post_calls,
)
from tests.e2e.harness import Running, system_in
from tests.support import auth, http_client

ACCOUNTS_PER_VICTIM = 4


@pytest.fixture(scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    """A system of this module's own: its tests kill services and stall the broker."""
    async with system_in(tmp_path_factory.mktemp("e2e-faults")) as system:
        yield system


async def _kill_mid_stream(running: Running, name: str, accounts: list[str]) -> None:
    """SIGKILL ``name`` once it has started on these accounts' work (not finished it)."""

    async def started() -> bool:
        if name == "health":
            return await events_counted(running.url("health"), accounts[0]) > 0
        if name == "playbooks":
            page = await get_json(f"{running.url('playbooks')}/v1/task-groups", limit=500)
            return any(g["account_id"] in accounts for g in page["items"])
        return any(running.smtp.to(f"casey@{a}.test") for a in accounts)

    await eventually(started, timeout=120, what=f"{name} to start on the stream")
    proc = running.system.processes[name]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    start_service(running.system, name)
    await wait_ready(running.system, timeout=90)


async def _one_of_each(
    running: Running,
    account: str,
    contact: str,
    slack_id: str,
    expected_events: int,
    *,
    resent_allowed: bool = False,
) -> frozenset[str]:
    """The account's whole flow happened exactly once; returns the rules that alerted."""
    health, playbooks, notify = (running.url(n) for n in ("health", "playbooks", "notify"))
    await eventually(
        lambda: events_counted(health, account), timeout=120, what=f"{account} rolled up"
    )
    await eventually(lambda: running.smtp.to(contact), timeout=120, what=f"{account}'s email")
    await eventually(
        lambda: [m for m in running.slack.messages if m.get("channel") == slack_id],
        timeout=120,
        what=f"{account}'s Slack message",
    )

    async def deliveries_settled() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (
            await get_json(f"{notify}/v1/deliveries", account_id=account)
        )["items"]
        return items if items and all(d["status"] == "sent" for d in items) else []

    try:
        deliveries = await eventually(deliveries_settled, timeout=60, what=f"{account} all sent")
    except AssertionError as exc:  # say what is waiting, and what asked for it
        raise AssertionError(
            exc,
            (await get_json(f"{notify}/v1/deliveries", account_id=account))["items"],
            (await get_json(f"{health}/v1/alerts", account_id=account))["items"],
            (await get_json(f"{playbooks}/v1/task-groups", account_id=account))["items"],
        ) from None
    assert await events_counted(health, account) == expected_events
    alerts = (await get_json(f"{health}/v1/alerts", account_id=account))["items"]
    rules = [a["rule_id"] for a in alerts]
    assert rules and len(rules) == len(set(rules)), rules  # one alert per (account, rule)
    groups = (await get_json(f"{playbooks}/v1/task-groups", account_id=account))["items"]
    assert [g["playbook_id"] for g in groups] == ["adoption-risk"], (alerts, groups)
    why = (alerts, groups, deliveries)
    # adoption-risk's two day-0 steps: the owner's Slack message and the check-in email
    assert sorted(d["channel"] for d in deliveries) == ["email", "slack"], why
    assert len({d["idempotency_key"] for d in deliveries}) == 2, why
    emails = running.smtp.to(contact)
    # An email sent just before a SIGKILL of notify, not yet marked sent, goes again after
    # the lease with the same Message-ID (SMTP has no idempotency; mailboxes dedupe on
    # it). Anything else arrives exactly once.
    assert len({m["Message-ID"] for m in emails}) == 1, why
    if not resent_allowed:
        assert len(emails) == 1, why
    assert len([m for m in running.slack.messages if m.get("channel") == slack_id]) == 1, why
    return frozenset(rules)


@pytest.mark.timeout(600)
async def test_sigkill_each_consumer_mid_stream_loses_and_doubles_nothing(
    running: Running,
) -> None:
    for victim in ("health", "playbooks", "notify"):
        accounts = [f"kill-{victim}-{uuid.uuid4().hex[:6]}" for _ in range(ACCOUNTS_PER_VICTIM)]
        histories = {}
        for account in accounts:
            owner = f"owner@{account}.test"
            await make_csm(running.url("playbooks"), owner, f"U-{account}")
            histories[account] = collapse_history(
                account, owner=owner, contact=f"casey@{account}.test"
            )
        calls: list[dict[str, Any]] = [c for h in histories.values() for c in h]
        calls.sort(key=lambda c: c["timestamp"])  # interleaved, as a real stream is
        pids_before = running.system.processes[victim].pid
        await asyncio.gather(
            post_calls(running.url("ingest"), calls, batch=100),
            _kill_mid_stream(running, victim, accounts),
        )
        assert running.system.processes[victim].pid != pids_before
        alerted = set()
        for account, history in histories.items():
            tracked = sum(1 for c in history if c["type"] == "track")
            alerted.add(
                await _one_of_each(
                    running,
                    account,
                    f"casey@{account}.test",
                    f"U-{account}",
                    tracked,
                    resent_allowed=victim == "notify",
                )
            )
        # the same history gives the same alerts, whether or not the kill hit its account
        assert len(alerted) == 1, (victim, alerted)


@pytest.mark.timeout(300)
async def test_broker_stall_under_load(running: Running) -> None:
    """20 s of SIGSTOP: ingest answers 503 (never 200) meanwhile; clients retry as SDKs do;
    afterwards every event is counted exactly once and no consumer was restarted."""
    account = f"stall-{uuid.uuid4().hex[:6]}"
    pids = {n: p.pid for n, p in running.system.processes.items()}
    stalled: dict[str, float] = {}
    answers: list[tuple[float, float, int]] = []  # started, finished, status
    sent = 0

    async def load(client: httpx.AsyncClient, deadline: float) -> None:
        nonlocal sent
        n = 0
        while time.monotonic() < deadline:
            batch = [
                {
                    "type": "track",
                    "userId": "u",
                    "event": "Tick",
                    "groupId": account,
                    "messageId": f"{account}-{n}-{i}",
                }
                for i in range(10)
            ]
            n += 1
            while True:  # retry the same events until accepted, like an SDK
                t0 = time.monotonic()
                r = await client.post("/v1/batch", json={"batch": batch})
                answers.append((t0, time.monotonic(), r.status_code))
                if r.status_code == 200:
                    sent += len(batch)
                    break
                assert r.status_code == 503, r.text
                assert r.headers["Retry-After"]
                await asyncio.sleep(0.5)
            await asyncio.sleep(0.02)

    async def stall() -> None:
        await asyncio.sleep(3)
        running.broker.pause()
        stalled["from"] = time.monotonic()
        await asyncio.sleep(20)
        running.broker.resume()
        stalled["to"] = time.monotonic()

    async with http_client(
        base_url=running.url("ingest"), headers=auth("ingest"), timeout=30
    ) as client:
        await asyncio.gather(load(client, time.monotonic() + 28), stall())

    during = [s for t0, t1, s in answers if t0 > stalled["from"] + 0.1 and t1 < stalled["to"]]
    assert during and set(during) == {503}, "ingest must answer 503, never 200, while stalled"
    await eventually(
        lambda: _counted_is(running, account, sent),
        timeout=120,
        what="every accepted event counted",
    )
    await asyncio.sleep(2)
    assert await events_counted(running.url("health"), account) == sent  # once, not twice
    # every consumer works on after the stall, unrestarted: a collapse goes all the way
    # through to an alert, a task group, an email and a Slack message
    after = f"after-stall-{uuid.uuid4().hex[:6]}"
    owner, contact = f"owner@{after}.test", f"casey@{after}.test"
    await make_csm(running.url("playbooks"), owner, f"U-{after}")
    history = collapse_history(after, owner=owner, contact=contact)
    await post_calls(running.url("ingest"), history)
    tracked = sum(1 for c in history if c["type"] == "track")
    await _one_of_each(running, after, contact, f"U-{after}", tracked)
    assert {n: p.pid for n, p in running.system.processes.items()} == pids
    assert all(p.poll() is None for p in running.system.processes.values())


async def _counted_is(running: Running, account: str, expected: int) -> bool:
    return await events_counted(running.url("health"), account) >= expected
