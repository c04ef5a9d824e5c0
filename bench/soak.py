"""The long soak: five minutes of mixed load (ingest + REST reads) at about half of the
measured capacity, printing errors and each service's memory every 30 s.

Run: ``python -m bench.soak`` (``SOAK_SECONDS``, ``SOAK_RATE`` to change it). The short
form runs in CI as ``tests/e2e/test_soak.py``.
"""

from __future__ import annotations

import asyncio
import os
import time

import httpx

from tests.e2e.harness import standalone_system
from tests.e2e.load import rss_bytes, steady_load
from tests.support import auth

SECONDS = float(os.environ.get("SOAK_SECONDS", "300"))
RATE = float(os.environ.get("SOAK_RATE", "5000"))


async def run() -> None:
    async with standalone_system() as running:
        procs = running.system.processes
        started = time.monotonic()
        load = asyncio.create_task(
            steady_load(running.url("ingest"), accounts=200, rate=RATE, seconds=SECONDS)
        )
        read_errors = 0
        async with httpx.AsyncClient(headers=auth("read"), timeout=30) as client:
            while not load.done():
                for svc, path in (
                    ("health", "/v1/accounts"),
                    ("playbooks", "/v1/stats"),
                    ("notify", "/v1/deliveries"),
                ):
                    r = await client.get(f"{running.url(svc)}{path}")
                    read_errors += r.status_code != 200
                elapsed = time.monotonic() - started
                if int(elapsed) % 30 == 0:
                    rss = "  ".join(
                        f"{n} {rss_bytes(p.pid) / 2**20:5.0f} MiB" for n, p in procs.items()
                    )
                    print(f"t={elapsed:5.0f}s  {rss}", flush=True)
                await asyncio.sleep(1)
        stats = await load
    print(
        f"soak {SECONDS:.0f}s at {RATE:,.0f} events/s: {stats.events:,} events accepted, "
        f"ingest errors {stats.errors or 'none'}, read errors {read_errors}"
    )


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
