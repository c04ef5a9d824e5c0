"""The demo run: replay the simulated history, wait for the pipeline to settle, and show
what came out of it, read back through each service's REST API."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime
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
# The alert rules as they were before the demo paused them for the import: written before
# anything is switched off, removed once they are back, so an interrupted demo (Ctrl-C in
# the middle of the replay, a crash) never leaves alerting off for the next run.
PAUSED_RULES = "demo-paused-rules.json"
# Longer than the playbooks scheduler's default tick (5 s): a quiet pipeline has no
# step waiting for its next pass.
QUIET_SECONDS = 6.0


async def run_demo(system: System, *, accounts: int, days: int) -> None:
    settings = system.settings
    ingest_key = create_token(settings.secret, scopes=["ingest"], subject="demo-product")
    admin = create_token(settings.secret, scopes=["admin"], subject="demo-cs-tool")
    today = datetime.now(UTC).date()
    population = make_population(accounts, today=today)
    async with httpx.AsyncClient(timeout=60, headers={"Authorization": f"Bearer {admin}"}) as c:
        await create_team(system, c)
        # Import the history first, then switch alerting on: alerts judge complete data.
        rules = await pause_alerting(system, c)
        imported = False
        try:
            console.print(
                f"[bold]Replaying {days} days of usage for {accounts} simulated accounts[/]"
            )
            started = time.monotonic()
            stats = await replay(
                system.url("ingest"), ingest_key, population, days=days, today=today
            )
            console.print(
                f"sent {stats.events:,} calls in {stats.batches:,} batches "
                f"({stats.events / (time.monotonic() - started):,.0f}/s), "
                f"{stats.rejected} rejected, {stats.retries} retried"
            )
            await settle(system, c, "importing the history")
            imported = True
        finally:  # interrupted too: the rules go back as they were
            await resume_alerting(system, c, rules, recompute=imported)
        await settle(system, c, "alerts, task groups and messages")
        await summary(system, c)


async def resume_interrupted_demo(system: System) -> None:
    """``uptake run`` after a demo that died mid-import: switch its rules back on."""
    path = _paused_rules_file(system)
    if not path.exists():
        return
    admin = create_token(system.settings.secret, scopes=["admin"], subject="uptake-run")
    async with httpx.AsyncClient(timeout=60, headers={"Authorization": f"Bearer {admin}"}) as c:
        await resume_alerting(system, c, orjson.loads(path.read_bytes()), recompute=True)
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


async def pause_alerting(system: System, client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Switch health's alert rules off, returning them as they were (and keeping them on
    disk until :func:`resume_alerting`). After an interrupted demo the file, not the
    switched-off rules health now holds, says how they were."""
    path = _paused_rules_file(system)
    if path.exists():
        rules: list[dict[str, Any]] = orjson.loads(path.read_bytes())
    else:
        rules = (await client.get(f"{system.url('health')}/v1/alert-rules")).json()
        path.write_bytes(orjson.dumps(rules))
    await _put_rules(system, client, rules, enabled=False)
    return rules


async def resume_alerting(
    system: System, client: httpx.AsyncClient, rules: list[dict[str, Any]], *, recompute: bool
) -> None:
    """Put the rules back as they were; ``recompute`` scores everyone (and alerts) now."""
    await _put_rules(system, client, rules, enabled=True)
    _paused_rules_file(system).unlink(missing_ok=True)
    if recompute:
        (await client.post(f"{system.url('health')}/v1/recompute")).raise_for_status()


async def _put_rules(
    system: System, client: httpx.AsyncClient, rules: list[dict[str, Any]], *, enabled: bool
) -> None:
    url = f"{system.url('health')}/v1/alert-rules"
    for rule in rules:
        body = {k: rule[k] for k in ("type", "name", "severity", "cooldown_days", "params")}
        body["enabled"] = rule["enabled"] and enabled
        response = await client.put(f"{url}/{rule['id']}", json=body)
        if response.status_code == 404:  # deleted meanwhile: nothing to switch
            continue
        response.raise_for_status()


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
    console.print(f"Dev outbox: {system.settings.data_dir.resolve() / 'outbox'}")
    for name in system.processes:
        console.print(f"{name:10s} {system.url(name)}/docs")


def _counts(title: str, counts: Counter[str], label: str) -> None:
    table = Table(title=title)
    table.add_column(label)
    table.add_column("count", justify="right")
    for key, n in counts.most_common():
        table.add_row(key, str(n))
    console.print(table)
