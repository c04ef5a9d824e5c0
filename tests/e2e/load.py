"""A steady background load: today's usage for a set of accounts, at a fixed event rate."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

import httpx

from tests.support import auth


@dataclass
class LoadStats:
    events: int = 0
    requests: int = 0
    errors: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)


async def steady_load(
    ingest: str,
    *,
    accounts: int,
    rate: float,
    seconds: float,
    batch: int = 50,
    prefix: str = "load",
) -> LoadStats:
    """Post ``rate`` events/s (in batches of ``batch``) for ``seconds``; count what came back."""
    stats = LoadStats()
    counter = itertools.count()
    interval = batch / rate
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=ingest, headers=auth("ingest"), timeout=30) as client:

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
        while next_at < deadline:
            task = asyncio.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        if tasks:
            await asyncio.gather(*tasks)
    return stats


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")
