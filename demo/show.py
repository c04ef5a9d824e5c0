"""The demo run: replay the simulated history, wait for the pipeline to settle, and show
what came out of it, read back through each service's REST API."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from rich.console import Console
from rich.table import Table

from demo.population import CSMS, make_population
from demo.replay import replay
from shared.auth import create_token
from shared.supervisor import System

console = Console()
PAGE = 500
# Written by demos before alerts judged settled data only: they switched every rule off
# for the import and kept the rules as they were here until they were back on. A demo
# interrupted back then left them off; ``uptake run`` and ``uptake demo`` put them back.
PAUSED_RULES = "demo-paused-rules.json"
# Longer than the playbooks scheduler's default tick (5 s): a quiet pipeline has no
# step waiting for its next pass.
QUIET_SECONDS = 6.0


async def run_demo(system: System, *, accounts: int, days: int) -> None:
    """Import the history with every alert rule on: health scores it as it arrives and
    alerts only once each account's data has settled, so nobody is emailed about the
    import itself."""
    settings = system.settings
    ingest_key = create_token(settings.secret, scopes=["ingest"], subject="demo-product")
    admin = create_token(settings.secret, scopes=["admin"], subject="demo-cs-tool")
    today = datetime.now(UTC).date()
    population = make_population(accounts, today=today)
    async with httpx.AsyncClient(timeout=60, headers={"Authorization": f"Bearer {admin}"}) as c:
        await restore_paused_rules(system, c)
        await create_team(system, c)
        console.print(f"[bold]Replaying {days} days of usage for {accounts} simulated accounts[/]")
        started = time.monotonic()
        stats = await replay(system.url("ingest"), ingest_key, population, days=days, today=today)
        console.print(
            f"sent {stats.events:,} calls in {stats.batches:,} batches "
            f"({stats.events / (time.monotonic() - started):,.0f}/s), "
            f"{stats.rejected} rejected, {stats.retries} retried"
        )
        await settle(system, c, "importing the history")
        await settled_in_health(system, c)
        await settle(system, c, "alerts, task groups and messages")
        await backfill_score_history(system, c, days=days, today=today)
        await summary(system, c)


async def backfill_score_history(
    system: System, client: httpx.AsyncClient, *, days: int, today: date
) -> None:
    """Score each replayed day as of that day, so score charts show the history (health
    scores live only from now on; a past ``as_of`` fills history and alerts no one)."""
    url = f"{system.url('health')}/v1/recompute"
    first = min(days, 90) - 7  # a score needs a week of usage behind it
    with console.status(f"filling {first} days of score history..."):
        for back in range(first, 0, -1):
            day = today - timedelta(days=back)
            (await client.post(url, params={"as_of": day.isoformat()})).raise_for_status()


async def resume_interrupted_demo(system: System) -> None:
    """``uptake run`` after an older demo that died mid-import: switch its rules back on."""
    if not _paused_rules_file(system).exists():
        return
    admin = create_token(system.settings.secret, scopes=["admin"], subject="uptake-run")
    async with httpx.AsyncClient(timeout=60, headers={"Authorization": f"Bearer {admin}"}) as c:
        await restore_paused_rules(system, c)


async def restore_paused_rules(system: System, client: httpx.AsyncClient) -> None:
    """Rules an interrupted older demo left switched off go back as they were, and
    everyone is rescored."""
    path = _paused_rules_file(system)
    if not path.exists():
        return
    rules: list[dict[str, Any]] = orjson.loads(path.read_bytes())
    url = f"{system.url('health')}/v1/alert-rules"
    for rule in rules:
        body = {k: rule[k] for k in ("type", "name", "severity", "cooldown_days", "params")}
        body["enabled"] = rule["enabled"]
        response = await client.put(f"{url}/{rule['id']}", json=body)
        if response.status_code == 404:  # deleted meanwhile: nothing to switch
            continue
        response.raise_for_status()
    path.unlink()
    (await client.post(f"{system.url('health')}/v1/recompute")).raise_for_status()
    console.print("alert rules paused by an interrupted demo are back on")


async def create_team(system: System, client: httpx.AsyncClient) -> None:
    """The CS team, with Slack ids so alerts reach their owners."""
    for name, email in CSMS:
        handle = "U" + email.split("@")[0].upper()
        r = await client.post(
            f"{system.url('playbooks')}/v1/csms",
            json={"email": email, "name": name, "slack_id": handle},
        )
        if r.status_code not in (200, 201, 409):
            r.raise_for_status()


def _paused_rules_file(system: System) -> Path:
    return system.settings.data_dir / PAUSED_RULES


async def _gauge(system: System, client: httpx.AsyncClient, service: str, name: str) -> float:
    text = (await client.get(f"{system.url(service)}/metrics")).text
    for line in text.splitlines():
        if line.startswith(f"{name} ") or line.startswith(f"{name}{{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def settled_in_health(system: System, client: httpx.AsyncClient) -> None:
    """Until health has judged every account on settled data (``HEALTH_SETTLE_SECONDS``
    after its last backdated event): no account left waiting for its rescoring."""
    with console.status("waiting for health: alerts judge each account's settled data..."):
        while True:
            if await _gauge(system, client, "health", "uptake_health_accounts_pending") <= 0:
                return
            await asyncio.sleep(1)


async def consumed(system: System, client: httpx.AsyncClient) -> float:
    """Messages every consumer group has committed so far (from ``/metrics``)."""
    total = 0.0
    for name in system.processes:
        text = (await client.get(f"{system.url(name)}/metrics")).text
        for line in text.splitlines():
            if line.startswith("uptake_kafka_consumed_total{"):
                total += float(line.rsplit(" ", 1)[1])
    return total


async def sending(system: System, client: httpx.AsyncClient) -> int:
    """Deliveries notify has taken in and is about to send (``deferred`` ones wait for a
    contact's frequency cap and ``retrying`` ones for their backoff: they do not count)."""
    url = f"{system.url('notify')}/v1/deliveries"
    total = 0
    for status in ("queued", "sending"):
        page = (await client.get(url, params={"status": status, "limit": PAGE})).json()
        total += len(page["items"])
    return total


async def settle(
    system: System, client: httpx.AsyncClient, what: str, *, quiet: float = QUIET_SECONDS
) -> None:
    """Wait until no consumer has committed anything new for ``quiet`` seconds and notify
    has nothing left to send."""
    with console.status(f"waiting for the pipeline to settle: {what}..."):
        last, still_since = -1.0, time.monotonic()
        while time.monotonic() - still_since < quiet or await sending(system, client):
            await asyncio.sleep(1)
            now = await consumed(system, client)
            if now != last:
                last, still_since = now, time.monotonic()


async def _all(client: httpx.AsyncClient, url: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        page = (
            await client.get(url, params={**params, "limit": PAGE, "offset": len(items)})
        ).json()
        items.extend(page["items"])
        if len(page["items"]) < PAGE:
            return items


async def summary(system: System, client: httpx.AsyncClient) -> None:
    health, playbooks, notify = (system.url(n) for n in ("health", "playbooks", "notify"))
    accounts = await _all(client, f"{health}/v1/accounts")
    alerts = await _all(client, f"{health}/v1/alerts", status="open")
    groups = await _all(client, f"{playbooks}/v1/task-groups")
    deliveries = await _all(client, f"{notify}/v1/deliveries")

    bands = Counter((a.get("health") or {}).get("band", "unscored") for a in accounts)
    table = Table(title="Accounts by band")
    table.add_column("band")
    table.add_column("accounts", justify="right")
    for band in ("green", "yellow", "red", "unscored"):
        table.add_row(band, str(bands.get(band, 0)))
    console.print(table)

    scored = [a for a in accounts if a.get("health")]
    risky = sorted(scored, key=lambda a: a["health"]["score"])[:5]
    table = Table(title="Riskiest accounts")
    for col in ("account", "score", "owner", "why"):
        table.add_column(col)
    for a in risky:
        components = sorted(a["health"].get("components") or [], key=lambda c: c["points"])
        why = components[0]["reason"] if components else ""
        table.add_row(
            a.get("name") or a["account_id"],
            f"{a['health']['score']:.0f}",
            a.get("owner") or "-",
            why,
        )
    console.print(table)

    _counts("Open alerts by rule", Counter(a["rule_type"] for a in alerts), "rule")
    _counts(
        "Task groups per CSM", Counter(g.get("assignee") or "unassigned" for g in groups), "CSM"
    )
    _counts(
        "Messages sent",
        Counter(f"{d['channel']} {d['status']}" for d in deliveries),
        "channel / status",
    )
    emails = [d for d in deliveries if d["channel"] == "email" and d["status"] == "sent"]
    reached = {d["recipient"] for d in emails if d.get("recipient")}
    console.print(
        f"Emails sent: {len(emails)} to {len(reached)} contacts "
        f"(accounts: {len({d['account_id'] for d in emails})})"
    )
    console.print(f"Dev outbox: {system.settings.data_dir.resolve() / 'outbox'}")
    for name in system.processes:
        console.print(f"{name:10s} {system.url(name)}/docs")
    print_console_link(system)


def print_console_link(system: System) -> None:
    """The console's address and, in development, a sign-in link for one demo CSM."""
    if "console" not in system.processes:
        return
    url = system.url("console")
    console.print(f"[bold]Console:[/] {url}/")
    if system.env.get("CONSOLE_DEV_LOGIN", "").lower() not in ("1", "true", "yes"):
        return
    name, email = CSMS[0]
    token = create_token(
        system.settings.secret, scopes=["write"], subject=email, ttl_seconds=7 * 86400
    )
    # soft_wrap: the link is one line, whatever the terminal's width
    console.print(
        f"Sign in as {name} (development only): {url}/login?token={token}", soft_wrap=True
    )


def _counts(title: str, counts: Counter[str], label: str) -> None:
    table = Table(title=title)
    table.add_column(label)
    table.add_column("count", justify="right")
    for key, n in counts.most_common():
        table.add_row(key, str(n))
    console.print(table)
