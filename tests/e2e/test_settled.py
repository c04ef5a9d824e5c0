"""Alerts open only on settled data, end to end: an import of 8 weeks of history through the
public API with every rule on (each account's ``group`` call first) emails nobody about
steady accounts, while an account that really went silent three weeks ago still gets its
alert and its email; a backlog consumed after health was down opens nothing either."""

from __future__ import annotations

import asyncio
import signal
import uuid
from typing import Any

from shared.supervisor import start_service, wait_ready
from tests.e2e.flows import (
    collapse_history,
    events_counted,
    eventually,
    get_json,
    post_calls,
)
from tests.e2e.harness import Running
from tests.support import http_client

WEEKS = 8
PER_DAY = 12


def _account(kind: str) -> tuple[str, str, str]:
    account = f"{kind}-{uuid.uuid4().hex[:8]}"
    return account, f"owner-{account}@uptake.test", f"casey@{account}.test"


def _history(account: str, owner: str, contact: str, *, silent_days: int) -> list[dict[str, Any]]:
    """8 weeks (up to yesterday) of steady use, the last ``silent_days`` of them silent."""
    return collapse_history(
        account,
        owner=owner,
        contact=contact,
        steady_days=7 * WEEKS - silent_days,
        silent_days=silent_days,
        per_day=PER_DAY,
    )


async def _import(running: Running, histories: list[list[dict[str, Any]]]) -> None:
    """As a team's import script: every account's ``group`` (and ``identify``) call first,
    then each account's history in batches."""
    ingest = running.url("ingest")
    await post_calls(ingest, [c for h in histories for c in h if c["type"] != "track"])
    for history in histories:
        await post_calls(ingest, [c for c in history if c["type"] == "track"], batch=100)


async def _alerts(running: Running, account: str) -> list[dict[str, Any]]:
    """Every alert of the account, whatever its status."""
    page = await get_json(f"{running.url('health')}/v1/alerts", account_id=account, limit=200)
    return page["items"]  # type: ignore[no-any-return]


async def _deliveries(running: Running, account: str) -> list[dict[str, Any]]:
    page = await get_json(f"{running.url('notify')}/v1/deliveries", account_id=account)
    return page["items"]  # type: ignore[no-any-return]


async def _health_pending(running: Running) -> float:
    async with http_client(timeout=10) as client:
        text = (await client.get(f"{running.url('health')}/metrics")).text
    for line in text.splitlines():
        if line.startswith("uptake_health_accounts_pending "):
            return float(line.rsplit(" ", 1)[1])
    return -1.0


async def _judged(running: Running, accounts: list[str], events: int) -> None:
    """Until health holds every event of these accounts and has judged them all on
    settled data (nothing left waiting), and a while more for anything downstream."""
    health = running.url("health")
    for account in accounts:
        await eventually(
            lambda a=account: _has(health, a, events), timeout=120, what=f"{account}'s events"
        )
    await eventually(lambda: _settled(running), timeout=120, what="health to settle")
    await asyncio.sleep(5)  # playbooks and notify have had their turn


async def _has(health: str, account: str, events: int) -> bool:
    return await events_counted(health, account, days=90) >= events


async def _settled(running: Running) -> bool:
    return await _health_pending(running) == 0


async def test_history_import_with_every_rule_on_emails_only_the_really_silent(
    running: Running,
) -> None:
    steady = [_account("steady") for _ in range(3)]
    silent, silent_owner, silent_contact = _account("silent")
    histories = [_history(a, o, c, silent_days=0) for a, o, c in steady]
    histories.append(_history(silent, silent_owner, silent_contact, silent_days=21))
    await _import(running, histories)

    # the account that really went silent three weeks ago: its alert, then its email
    opened = await eventually(
        lambda: _alerts(running, silent), timeout=120, what="the silent account's alert"
    )
    assert "inactivity" in {a["rule_type"] for a in opened}
    await eventually(
        lambda: running.smtp.to(silent_contact), timeout=120, what="the silent account's email"
    )

    await _judged(running, [a for a, _, _ in steady], 7 * WEEKS * PER_DAY)
    for account, _, contact in steady:
        assert await _alerts(running, account) == [], account
        assert await _deliveries(running, account) == [], account
        assert running.smtp.to(contact) == [], account
    assert {a["status"] for a in await _alerts(running, silent)} <= {"open"}


async def test_a_backlog_consumed_after_health_was_down_opens_no_transient_alert(
    running: Running,
) -> None:
    steady = [_account("backlog") for _ in range(3)]
    health = running.system.processes["health"]
    health.send_signal(signal.SIGTERM)
    health.wait(timeout=60)
    try:
        histories = [_history(a, o, c, silent_days=0) for a, o, c in steady]
        await _import(running, histories)  # ingest takes it in; health reads it later
    finally:
        start_service(running.system, "health")
        await wait_ready(running.system, timeout=90)
    await _judged(running, [a for a, _, _ in steady], 7 * WEEKS * PER_DAY)
    for account, _, contact in steady:
        assert await _alerts(running, account) == [], account
        assert await _deliveries(running, account) == [], account
        assert running.smtp.to(contact) == [], account
