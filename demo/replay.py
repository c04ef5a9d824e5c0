"""Posting the simulated history through the ingest API, as a SaaS product's SDK would:
gzip-encoded Segment batches, retried on 429/503 after ``Retry-After``."""

from __future__ import annotations

import asyncio
import gzip
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import httpx
import orjson
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from demo.population import Account, daily_events, group_call, identify_calls

BATCH_EVENTS = 400


@dataclass
class ReplayStats:
    events: int = 0
    batches: int = 0
    rejected: int = 0
    retries: int = 0


def history(
    accounts: list[Account], days: int, today: date, seed: int = 11
) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """(day, calls) in time order: sign-ups, owner changes, then the day's usage."""
    rng = random.Random(seed)
    start = today - timedelta(days=days - 1)
    for day in range(days):
        when = start + timedelta(days=day)
        calls: list[dict[str, Any]] = []
        for acct in accounts:
            signup_day = days - 30 if acct.persona == "stalled_onboarding" else 0
            if day == signup_day:
                calls.append(group_call(acct, acct.owner, when))
                calls.extend(identify_calls(acct, when))
            if acct.new_owner and day == acct.change_day:
                calls.append(group_call(acct, acct.new_owner, when))
            calls.extend(daily_events(acct, day, days, when, rng))
        yield day, calls


async def post_batch(
    client: httpx.AsyncClient, calls: list[dict[str, Any]], stats: ReplayStats
) -> None:
    body = gzip.compress(orjson.dumps({"batch": calls}))
    while True:
        response = await client.post(
            "/v1/batch",
            content=body,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )
        if response.status_code in (429, 503):
            stats.retries += 1
            await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
            continue
        response.raise_for_status()
        stats.rejected += len(response.json().get("rejected") or [])
        stats.events += len(calls)
        stats.batches += 1
        return


async def replay(
    ingest_url: str,
    token: str,
    accounts: list[Account],
    *,
    days: int,
    today: date,
    concurrency: int = 4,
) -> ReplayStats:
    stats = ReplayStats()
    queue: asyncio.Queue[list[dict[str, Any]] | None] = asyncio.Queue(maxsize=concurrency * 2)
    progress = Progress(
        TextColumn("replaying usage"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("days  {task.fields[events]:,} events"),
        TimeElapsedColumn(),
    )
    async with httpx.AsyncClient(
        base_url=ingest_url, timeout=30, headers={"Authorization": f"Bearer {token}"}
    ) as client:

        async def worker() -> None:
            while (calls := await queue.get()) is not None:
                await post_batch(client, calls, stats)

        workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
        try:
            with progress:
                task = progress.add_task("replay", total=days, events=0)
                for _, calls in history(accounts, days, today):
                    for i in range(0, len(calls), BATCH_EVENTS):
                        await queue.put(calls[i : i + BATCH_EVENTS])
                    progress.update(task, advance=1, events=stats.events)
                for _ in workers:
                    await queue.put(None)
                await asyncio.gather(*workers)
                progress.update(task, events=stats.events)
        finally:
            # Ctrl-C (the demo cancelled) or a failed batch: the other posters stop before
            # the client closes under them, so no traceback is printed over the drain
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
    return stats
