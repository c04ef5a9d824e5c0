"""Playbooks benchmark: alerts/s turned into stored, assigned task groups, and due steps/s
published by the scheduler, each next to the raw rate of the same broker in the same run.

    .venv/bin/python -m bench.playbooks [--alerts 5000] [--database-url URL]

Starts its own embedded broker; SQLite in a temp dir unless --database-url (PostgreSQL).
Raw consume = a consumer group with a no-op handler over the same alert messages; raw
produce = publish_many of the same number of notify requests, in the scheduler's chunks.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

os.environ.setdefault("LOG_LEVEL", "WARNING")

from services.playbooks import repository
from services.playbooks.consumer import PlaybooksConsumer
from services.playbooks.flows import TeamDefaults
from services.playbooks.library import builtin_templates
from services.playbooks.models import Task, TaskGroup
from services.playbooks.scheduler import SchedulerConfig, StepScheduler
from shared import topics
from shared.broker import EmbeddedBroker, free_port
from shared.db import create_engine, create_sessionmaker
from shared.envelope import Envelope, wrap
from shared.kafka import ConsumerRunner, Publisher, Record
from shared.logging import configure_logging
from shared.messages import (
    AlertChanged,
    ContactUpserted,
    NotifyRequested,
    Recipient,
)
from shared.migrations import upgrade_async

CSMS = 25
CHUNK = 1000


def _alert(i: int, run: str) -> Envelope:
    now = datetime.now(UTC)
    alert = AlertChanged(
        alert_id=f"{run}-al-{i}",
        rule_id="score-drop",
        rule_type="score_drop",
        status="open",
        severity=3,
        owner=f"csm{i % CSMS}@bench.test" if i % 4 else None,  # a quarter: least-loaded
        title="Score dropped",
        reason="score -20 in 7 days",
        opened_at=now,
    )
    return wrap(alert, type="alert.opened", account_id=f"{run}-acct-{i}", source="bench")


def _contact(i: int, run: str) -> Envelope:
    contact = ContactUpserted(
        message_id=uuid.uuid4().hex, user_id="u1", email=f"c{i}@bench.test", name="Pat"
    )
    return wrap(contact, type="contact.upserted", account_id=f"{run}-acct-{i}", source="bench")


async def _publish(publisher: Publisher, topic: str, envs: list[Envelope]) -> float:
    started = time.perf_counter()
    for i in range(0, len(envs), CHUNK):
        await publisher.publish_many((topic, e) for e in envs[i : i + CHUNK])
    return time.perf_counter() - started


class Timed:
    """Wraps a batch handler. The rate counts what came after the first batch, from the end
    of the first batch to the end of the last, so the group join does not count."""

    def __init__(self, inner: Callable[[list[Record]], Awaitable[None]] | None) -> None:
        self.inner = inner
        self.first_end: float | None = None
        self.first_count = 0
        self.last = 0.0
        self.count = 0

    async def __call__(self, records: list[Record]) -> None:
        if self.inner is not None:
            await self.inner(records)
        self.count += len(records)
        self.last = time.perf_counter()
        if self.first_end is None:
            self.first_end, self.first_count = self.last, self.count

    def rate(self, share: float = 1.0) -> float:
        """Messages/s after the first batch; ``share`` = the part of them that counts."""
        elapsed = self.last - (self.first_end or self.last)
        return (self.count - self.first_count) * share / elapsed if elapsed > 0 else float("nan")


async def _run_consumer(
    bootstrap: str,
    publisher: Publisher,
    topic_list: list[str],
    handler: Timed,
    until: Callable[[], Awaitable[bool]],
) -> None:
    runner = ConsumerRunner(
        bootstrap_servers=bootstrap,
        group_id=f"bench-{uuid.uuid4().hex[:8]}",
        topics=topic_list,
        handler=handler,
        publisher=publisher,
        max_batch=500,
    )
    await runner.start()
    try:
        while not await until():
            await asyncio.sleep(0.05)
    finally:
        await runner.stop()


async def bench(alerts: int, database_url: str | None) -> None:
    configure_logging(service="bench", level="WARNING", json=False)
    tmp = Path(tempfile.mkdtemp(prefix="bench-playbooks-"))
    url = database_url or f"sqlite+aiosqlite:///{tmp / 'playbooks.db'}"
    broker = EmbeddedBroker(port=free_port(), log_path=tmp / "tansu.log")
    await broker.start(partitions=3)
    bootstrap = broker.bootstrap_servers
    publisher = Publisher(bootstrap, client_id="bench")
    await publisher.start()
    await upgrade_async("playbooks", url)
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    run = uuid.uuid4().hex[:6]
    try:
        async with sessions() as session, session.begin():
            await repository.seed_library(session, builtin_templates(), now=datetime.now(UTC))
        await _publish(publisher, topics.ACCOUNTS, [_contact(i, run) for i in range(alerts)])
        alert_envs = [_alert(i, run) for i in range(alerts)]
        produce_alerts_s = await _publish(publisher, topics.HEALTH_ALERTS, alert_envs)

        # Raw consume: the same alert messages, no-op handler.
        raw = Timed(None)

        async def raw_done() -> bool:
            return raw.count >= alerts

        await _run_consumer(bootstrap, publisher, [topics.HEALTH_ALERTS], raw, raw_done)
        raw_rate = raw.rate()

        # Alerts -> stored, assigned task groups (contacts first, as in production).
        handler = PlaybooksConsumer(
            sessions, defaults=TeamDefaults(), clock=lambda: datetime.now(UTC)
        )
        timed = Timed(handler.handle)

        async def groups_done() -> bool:
            if timed.count < 2 * alerts:
                return False
            async with sessions() as session:
                n = await session.scalar(select(func.count()).select_from(TaskGroup))
            return int(n or 0) >= alerts

        await _run_consumer(
            bootstrap, publisher, [topics.ACCOUNTS, topics.HEALTH_ALERTS], timed, groups_done
        )
        group_rate = timed.rate(share=0.5)  # half the messages were contacts
        async with sessions() as session:
            unassigned = await session.scalar(
                select(func.count()).select_from(TaskGroup).where(TaskGroup.assignee.is_(None))
            )
            due = await session.scalar(
                select(func.count()).select_from(Task).where(Task.automated.is_(True))
            )

        # Due steps -> notify.requests.v1.
        scheduler = StepScheduler(
            sessions,
            publisher,
            config=SchedulerConfig(batch_size=500, default_slack_channel="#cs"),
            clock=lambda: datetime.now(UTC),
        )
        started = time.perf_counter()
        while await scheduler.run_once() > 0:
            pass
        step_s = time.perf_counter() - started
        step_rate = scheduler.sent_total / (step_s or 1e-9)

        sample = NotifyRequested(
            idempotency_key="g:s",
            channel="email",
            template_id="adoption-checkin",
            to=[Recipient(email="c@bench.test", name="Pat", contact_id="u1")],
            context={"account_name": "Acme", "csm_name": "Cam", "alert": {"title": "x" * 40}},
        )
        raw_envs = [
            wrap(sample, type="notify.requested", account_id=f"{run}-raw-{i}", source="bench")
            for i in range(scheduler.sent_total)
        ]
        started = time.perf_counter()
        for i in range(0, len(raw_envs), 500):
            await publisher.publish_many((topics.NOTIFY_REQUESTS, e) for e in raw_envs[i : i + 500])
        raw_produce = len(raw_envs) / (time.perf_counter() - started)
    finally:
        await publisher.stop()
        await engine.dispose()
        broker.stop()

    backend = engine.url.get_backend_name()
    print(f"playbooks bench ({backend}, {alerts} alerts, {CSMS} CSMs, 3 partitions)")
    print(f"  produce alerts (raw)           {alerts / produce_alerts_s:10.0f} msg/s")
    print(f"  consume alerts (raw, no-op)    {raw_rate:10.0f} msg/s")
    print(
        f"  alerts -> assigned groups      {group_rate:10.0f} alerts/s   "
        f"({group_rate / raw_rate:.1%} of raw consume; incl. {alerts} contact msgs)"
    )
    print(f"  groups unassigned              {int(unassigned or 0):10d}")
    print(
        f"  due steps published            {step_rate:10.0f} steps/s   "
        f"({scheduler.sent_total} of {int(due or 0)} automated steps)"
    )
    print(
        f"  produce notify requests (raw)  {raw_produce:10.0f} msg/s    "
        f"(scheduler at {step_rate / raw_produce:.1%} of raw produce)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--alerts", type=int, default=5000)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_PLAYBOOKS_DATABASE_URL"))
    args = parser.parse_args()
    asyncio.run(bench(args.alerts, args.database_url))


if __name__ == "__main__":
    main()
