"""Two consumers (replicas) handling the same alert at once store one group: the loser's
batch fails as transient and its retry absorbs into the winner's group."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from services.playbooks import repository
from services.playbooks.consumer import PlaybooksConsumer
from services.playbooks.flows import TeamDefaults
from services.playbooks.library import builtin_templates
from services.playbooks.models import GroupTrigger, TaskGroup
from shared import topics
from shared.db import create_engine, create_sessionmaker
from shared.envelope import wrap
from shared.kafka import Record, TransientError
from shared.messages import AlertChanged
from shared.migrations import upgrade_async


def _record(alert_id: str) -> Record:
    alert = AlertChanged(
        alert_id=alert_id,
        rule_id="r",
        rule_type="inactivity",
        status="open",
        severity=2,
        owner="o@cs.test",
        title="Quiet",
        reason="no events in 14 days",
        opened_at=datetime.now(UTC),
    )
    env = wrap(alert, type="alert.opened", account_id="acct-race", source="tests")
    return Record(topics.HEALTH_ALERTS, 0, 0, env)


async def test_replicas_racing_on_one_account_store_one_group(
    database_url: Callable[[str], Awaitable[str]],
) -> None:
    url = await database_url("playbooks")
    await upgrade_async("playbooks", url)
    engines = [create_engine(url) for _ in range(2)]
    makers = [create_sessionmaker(e) for e in engines]
    async with makers[0]() as session, session.begin():
        await repository.seed_library(session, builtin_templates(), now=datetime.now(UTC))
    handlers = [
        PlaybooksConsumer(m, defaults=TeamDefaults(), clock=lambda: datetime.now(UTC))
        for m in makers
    ]
    batches = [[_record("al-1")], [_record("al-2")]]  # two alerts, one playbook, one account

    async def handle_until_done(handler: PlaybooksConsumer, batch: list[Record]) -> int:
        failures = 0
        while True:
            try:
                await handler.handle(batch)
                return failures
            except (TransientError, OperationalError):  # what the runner retries forever
                failures += 1
                await asyncio.sleep(0.05)

    try:
        # Usually one of them loses (it read before the other committed) and retries.
        await asyncio.gather(
            *(handle_until_done(h, b) for h, b in zip(handlers, batches, strict=True))
        )
        async with makers[0]() as session:
            groups = await session.scalar(select(func.count()).select_from(TaskGroup))
            triggers = await session.scalar(select(func.count()).select_from(GroupTrigger))
    finally:
        for e in engines:
            await e.dispose()
    assert (groups, triggers) == (1, 2)
