"""The scheduler when the broker stalls: the pass fails, nothing is marked sent, and the
next pass after the broker is back sends the step (a copy the stalled producer still
delivers carries the same idempotency key, which notify drops)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from services.playbooks import repository
from services.playbooks.flows import GroupStarter, TeamDefaults
from services.playbooks.library import builtin_templates
from services.playbooks.models import Task
from services.playbooks.planning import TriggerFacts
from services.playbooks.scheduler import SchedulerConfig, StepScheduler
from shared import topics
from shared.broker import EmbeddedBroker
from shared.db import create_engine, create_sessionmaker
from shared.kafka import Publisher, PublishError
from shared.migrations import upgrade_async
from tests.support import read_topic


async def test_failed_publish_marks_nothing_and_next_pass_sends_once(
    private_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'playbooks.db'}"
    await upgrade_async("playbooks", url)
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    now = datetime.now(UTC)
    expansion = next(t for t in builtin_templates() if t.id == "expansion")
    async with sessions() as session, session.begin():
        await repository.seed_library(session, builtin_templates(), now=now)
        starter = await GroupStarter.load(
            session, account_ids=["a1"], trigger_keys=["manual:1"], now=now, defaults=TeamDefaults()
        )
        started = starter.start(
            account_id="a1",
            template=expansion,
            trigger_key="manual:1",
            trigger=TriggerFacts(kind="manual"),
            assignee="owner@cs.test",
        )
        await starter.finish()
    assert started is not None
    publisher = Publisher(private_broker.bootstrap_servers, client_id="tests", timeout=1.0)
    await publisher.start()
    scheduler = StepScheduler(
        sessions, publisher, config=SchedulerConfig(default_slack_channel="#cs"), clock=lambda: now
    )
    try:
        private_broker.pause()
        try:
            with pytest.raises(PublishError):
                await scheduler.run_once()
        finally:
            private_broker.resume()
        async with sessions() as session:
            step = await session.scalar(select(Task).where(Task.step_key == "owner-slack"))
        assert step is not None and (step.status, step.sent_at) == ("open", None)

        assert await scheduler.run_once() == 1
        assert await scheduler.run_once(now + timedelta(days=1)) == 0
    finally:
        await publisher.stop()
        await engine.dispose()
    envs = await read_topic(
        private_broker.bootstrap_servers,
        topics.NOTIFY_REQUESTS,
        match=lambda e: e.account_id == "a1",
        count=1,
        settle=0.5,
    )
    key = f"{started.group.id}:owner-slack"
    assert envs and {e.id for e in envs} == {key}
    assert {e.data["idempotency_key"] for e in envs} == {key}
