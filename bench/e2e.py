"""End-to-end latency under a steady background load: from the ingested collapse of an
account's usage to its alert, its task group and the check-in email at the SMTP server.

Run: ``python -m bench.e2e`` (or ``make bench``). The four services run as separate
processes with the embedded broker, SQLite, aiosmtpd and a Slack stand-in, all on this
machine's cores, next to the load generator.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid

from tests.e2e.flows import collapse_history, get_json, post_calls
from tests.e2e.harness import Running, standalone_system
from tests.e2e.load import steady_load

PROBES = int(os.environ.get("BENCH_E2E_PROBES", "15"))
RATE = float(os.environ.get("BENCH_E2E_RATE", "1000"))  # background events/s


async def probe(running: Running) -> tuple[float, float, float]:
    """Seconds from posting a collapse to: the alert, the task group, the email."""
    account = f"probe-{uuid.uuid4().hex[:8]}"
    contact = f"casey@{account}.test"
    calls = collapse_history(account, owner=f"owner@{account}.test", contact=contact)
    await post_calls(running.url("ingest"), calls)
    posted = time.monotonic()
    alert = group = email = 0.0
    deadline = posted + 60
    while not (alert and group and email) and time.monotonic() < deadline:
        now = time.monotonic() - posted
        if (
            not alert
            and (await get_json(f"{running.url('health')}/v1/alerts", account_id=account))["items"]
        ):
            alert = now
        if (
            not group
            and (await get_json(f"{running.url('playbooks')}/v1/task-groups", account_id=account))[
                "items"
            ]
        ):
            group = now
        if contact in running.smtp.arrived:
            email = running.smtp.arrived[contact] - posted
        await asyncio.sleep(0.05)
    return alert, group, email


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


async def run() -> None:
    # Every timer at its default, but for the 15-minute review window before a customer
    # email of an alert (a wait by design): the figure is the pipeline's own latency.
    async with standalone_system(fast_loops=False, PLAYBOOKS_REVIEW_MINUTES="0") as running:
        done_probing = asyncio.Event()
        load = asyncio.create_task(  # until the last probe is in, however long that takes
            steady_load(
                running.url("ingest"), accounts=100, rate=RATE, seconds=3600, stop=done_probing
            )
        )
        await asyncio.sleep(5)
        # Start-up: consumer groups join (Tansu takes seconds) and catch up with the load.
        warmups = [await probe(running)]
        while len(warmups) < 6 and not 0 < warmups[-1][2] <= 2:
            warmups.append(await probe(running))
        results = []
        for _ in range(PROBES):
            results.append(await probe(running))
            await asyncio.sleep(1)
        done_probing.set()
        stats = await load
    done = [r for r in results if all(r)]
    firsts = ", ".join(f"{w[2]:.1f} s" for w in warmups)
    print(f"warm-up probes after start (not counted), email after: {firsts}")
    print(
        f"e2e latency under {RATE:,.0f} events/s of background load "
        f"({len(done)}/{len(results)} probes completed)"
    )
    for i, label in enumerate(("alert", "task group", "email at SMTP")):
        values = [r[i] for r in done]
        if values:
            print(
                f"  ingest -> {label:14s} p50 {pct(values, 50):6.2f} s   "
                f"p95 {pct(values, 95):6.2f} s"
            )
    print(
        f"background load: {stats.events / stats.seconds:,.0f} events/s accepted "
        f"over {stats.seconds:.0f} s, "
        f"errors {stats.errors or 'none'}"
    )


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
