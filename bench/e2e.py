"""End-to-end latency under a steady background load: from the ingested collapse of an
account's usage to its alert, its task group and the check-in email at the SMTP server.

The probe posts an account's history whose last week is silent: the data that proves the
collapse is backdated, so health holds the alert until it has settled
(``HEALTH_SETTLE_SECONDS``, 30 s by default) and the alert latency is about that delay plus
a rescoring run. (A collapse that shows live, when a quiet day ends, alerts on the next
run: ``tests/health/test_settled.py``.) The email follows the alert; when playbooks wait
a review window before a customer email, the email latency is alert latency + that window.

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
from datetime import datetime

from services.health.settings import HealthSettings
from services.playbooks.settings import PlaybooksSettings
from tests.e2e.flows import collapse_history, get_json, post_calls
from tests.e2e.harness import Running, standalone_system
from tests.e2e.load import steady_load

PROBES = int(os.environ.get("BENCH_E2E_PROBES", "15"))
RATE = float(os.environ.get("BENCH_E2E_RATE", "1000"))  # background events/s
PROBE_TIMEOUT = float(os.environ.get("BENCH_E2E_PROBE_TIMEOUT", "120"))


async def probe(running: Running) -> tuple[float, float, float]:
    """Seconds from posting a collapse to: the alert, the task group, the email."""
    account = f"probe-{uuid.uuid4().hex[:8]}"
    contact = f"casey@{account}.test"
    calls = collapse_history(account, owner=f"owner@{account}.test", contact=contact)
    await post_calls(running.url("ingest"), calls)
    posted, posted_wall = time.monotonic(), time.time()
    alert = group = email = 0.0
    deadline = posted + PROBE_TIMEOUT
    while not (alert and group and email) and time.monotonic() < deadline:
        now = time.monotonic() - posted
        if not alert:
            found = await get_json(f"{running.url('health')}/v1/alerts", account_id=account)
            if found["items"]:  # when health opened it (polls overlap with 15 probes)
                opened = datetime.fromisoformat(found["items"][0]["opened_at"]).timestamp()
                alert = max(0.001, min(now, opened - posted_wall))
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
        while len(warmups) < 3 and not all(warmups[-1]):
            warmups.append(await probe(running))
        # the probes overlap (each waits out the settle delay): one started every second
        tasks = []
        for _ in range(PROBES):
            tasks.append(asyncio.create_task(probe(running)))
            await asyncio.sleep(1)
        results = list(await asyncio.gather(*tasks))
        done_probing.set()
        stats = await load
    settle = HealthSettings.model_fields["settle_seconds"].default
    done = [r for r in results if r[0]]
    firsts = ", ".join(f"alert {w[0]:.1f} s / email {w[2]:.1f} s" for w in warmups)
    print(f"warm-up probes after start (not counted): {firsts}")
    review = PlaybooksSettings.model_fields["review_minutes"].default * 60
    print(
        f"e2e latency under {RATE:,.0f} events/s of background load, every timer at its "
        f"default (HEALTH_SETTLE_SECONDS {settle:g}) but the review window (measured at 0, "
        f"added below); {len(done)}/{len(results)} probes alerted"
    )
    for i, label in enumerate(("alert", "task group", "email at SMTP")):
        values = [r[i] for r in done if r[i]]
        if values:
            print(
                f"  ingest -> {label:14s} p50 {pct(values, 50):6.2f} s   "
                f"p95 {pct(values, 95):6.2f} s   ({len(values)} probes)"
            )
        else:
            print(f"  ingest -> {label:14s} none within {PROBE_TIMEOUT:.0f} s")
    emailed = [r for r in done if r[2]]
    if emailed:
        after = [r[2] - r[0] for r in emailed]
        print(f"  alert -> email at SMTP    p50 {pct(after, 50):6.2f} s")
        sent = [r[2] + review for r in emailed]
        print(
            f"  ingest -> email, with the default {review / 60:g}-minute review window: "
            f"p50 {pct(sent, 50):6.1f} s   p95 {pct(sent, 95):6.1f} s"
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
