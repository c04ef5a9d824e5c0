"""A short soak (the long one is ``bench/soak.py``): mixed load, no error, stable memory."""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest

from tests.e2e.harness import Running
from tests.e2e.load import rss_bytes, steady_load
from tests.support import auth

SECONDS = float(os.environ.get("SOAK_SECONDS", "30"))
RATE = float(os.environ.get("SOAK_RATE", "1500"))  # events/s: well under capacity here


@pytest.mark.timeout(300)
async def test_short_soak_mixed_load_no_errors_stable_memory(running: Running) -> None:
    await steady_load(running.url("ingest"), accounts=40, rate=RATE, seconds=5, prefix="warm")
    rss_before = {n: rss_bytes(p.pid) for n, p in running.system.processes.items()}
    reads = {"errors": 0, "requests": 0}

    async def readers() -> None:
        paths = [
            ("health", "/v1/accounts"),
            ("health", "/v1/alerts"),
            ("playbooks", "/v1/task-groups"),
            ("playbooks", "/v1/stats"),
            ("notify", "/v1/deliveries"),
        ]
        async with httpx.AsyncClient(headers=auth("read"), timeout=30) as client:
            for _ in range(int(SECONDS)):
                for service, path in paths:
                    r = await client.get(f"{running.url(service)}{path}")
                    reads["requests"] += 1
                    reads["errors"] += r.status_code != 200
                await asyncio.sleep(1)

    load, _ = await asyncio.gather(
        steady_load(running.url("ingest"), accounts=40, rate=RATE, seconds=SECONDS),
        readers(),
    )
    rss_after = {n: rss_bytes(p.pid) for n, p in running.system.processes.items()}
    assert load.errors == {} and load.events >= RATE * SECONDS * 0.9
    assert reads["errors"] == 0 and reads["requests"] > 0
    for name, before in rss_before.items():
        growth = rss_after[name] - before
        assert growth < 80 * 2**20, f"{name} grew {growth / 2**20:.0f} MiB in {SECONDS:.0f}s"
    assert all(p.poll() is None for p in running.system.processes.values())
