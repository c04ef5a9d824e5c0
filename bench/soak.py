"""The long soak: five minutes of mixed load at half of ingest's capacity measured in the
same run (steady usage, REST reads of every service, and a collapsing account every 10 s
that must end in an email and a Slack message), printing each service's memory every
30 s and a verdict at the end.

Run: ``python -m bench.soak`` (``SOAK_SECONDS``, ``SOAK_SHARE`` of capacity to change it).
The short form runs in CI as ``tests/e2e/test_soak.py``.
"""

from __future__ import annotations

import asyncio
import os
import time

from tests.e2e.harness import standalone_system
from tests.e2e.load import capacity, flows_delivered, soak, steady_load

SECONDS = float(os.environ.get("SOAK_SECONDS", "300"))
SHARE = float(os.environ.get("SOAK_SHARE", "0.5"))
MAX_GROWTH = 100 * 2**20  # per service, first sample to last


def _print_mark(elapsed: float, rss: dict[str, int]) -> None:
    line = "  ".join(f"{name} {value / 2**20:5.0f} MiB" for name, value in rss.items())
    print(f"t={elapsed:5.0f}s  {line}", flush=True)


async def run() -> bool:
    async with standalone_system() as running:
        await steady_load(running.url("ingest"), accounts=40, rate=500, seconds=5, prefix="warm")
        measured = await capacity(running.url("ingest"), seconds=10)
        rate = measured.rate * SHARE
        print(
            f"ingest capacity {measured.rate:,.0f} events/s (batches refused: "
            f"{measured.refused or 'none'}); soaking at {rate:,.0f} events/s"
        )
        result = await soak(running, seconds=SECONDS, rate=rate, on_mark=_print_mark)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            delivered = flows_delivered(running, result.flows_started)
            if len(delivered) == len(result.flows_started):
                break
            await asyncio.sleep(1)
        alive = all(p.poll() is None for p in running.system.processes.values())
    growth = result.growth()
    print(
        f"soak {SECONDS:.0f}s at {rate:,.0f} events/s: {result.load.events:,} events accepted "
        f"({result.load.events / SECONDS:,.0f}/s), ingest errors {result.load.errors or 'none'}, "
        f"reads {result.reads:,} with {result.read_errors} errors, collapse flows delivered "
        f"{len(delivered)}/{len(result.flows_started)}"
    )
    print("memory growth: " + ", ".join(f"{n} {g / 2**20:+.0f} MiB" for n, g in growth.items()))
    ok = (
        alive
        and not result.load.errors
        and result.read_errors == 0
        and len(delivered) == len(result.flows_started)
        and all(g < MAX_GROWTH for g in growth.values())
    )
    print(f"verdict: {'stable, no errors' if ok else 'PROBLEMS (see above)'}")
    return ok


def main() -> None:
    if not asyncio.run(run()):
        raise RuntimeError("soak found problems")


if __name__ == "__main__":
    main()
