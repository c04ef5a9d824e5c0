"""Publish after commit: messages are written in the transaction that caused them, then relayed.

A crash between the commit and the publish leaves the rows in place; the relay sends
them on its next pass. A message may then go out twice, never zero times: consumers
dedupe on the envelope id (and on ``alert_id`` for alerts).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import structlog
from sqlalchemy import Table, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.health.models import OutboxMessage
from shared.background import BackgroundTask, wait_for_event
from shared.envelope import Envelope
from shared.kafka import Publisher, PublishError

log = structlog.get_logger(__name__)
OUTBOX: Table = OutboxMessage.__table__  # type: ignore[assignment]


def enqueue(session: AsyncSession, topic: str, envelope: Envelope) -> None:
    session.add(
        OutboxMessage(
            topic=topic,
            key=envelope.key,
            value=envelope.to_bytes(),
            created_at=datetime.now(UTC),
        )
    )


async def enqueue_many(session: AsyncSession, topic: str, envelopes: list[Envelope]) -> None:
    """Many at once (a recompute's scores): one cached INSERT over all rows."""
    now = datetime.now(UTC)
    rows = [
        {"topic": topic, "key": e.key, "value": e.to_bytes(), "created_at": now} for e in envelopes
    ]
    for start in range(0, len(rows), 2000):
        await session.execute(insert(OUTBOX), rows[start : start + 2000])


class OutboxRelay:
    """Sends pending outbox rows in id order; woken after each commit, and every interval."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        publisher: Publisher,
        *,
        interval: float = 1.0,
        batch: int = 500,
    ) -> None:
        self._sessions = sessions
        self._publisher = publisher
        self._interval = interval
        self._batch = batch
        self._wake = asyncio.Event()
        self._background = BackgroundTask()
        self._lock = asyncio.Lock()

    def nudge(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._background.start("health:outbox", self._run)

    async def stop(self) -> None:
        await self._background.stop()
        with contextlib.suppress(Exception):
            await self.flush()

    async def _run(self) -> None:
        while True:
            await wait_for_event(self._wake, self._interval)
            self._wake.clear()
            try:
                await self.flush()
            except PublishError as exc:
                log.warning("outbox.publish_failed", error=repr(exc))
            except Exception as exc:
                log.error("outbox.failed", error=repr(exc))

    async def flush(self) -> int:
        """Publish everything pending; returns how many were sent."""
        sent = 0
        async with self._lock:
            while True:
                async with self._sessions() as session, session.begin():
                    query = select(OutboxMessage).order_by(OutboxMessage.id).limit(self._batch)
                    if session.get_bind().dialect.name == "postgresql":
                        query = query.with_for_update(skip_locked=True)
                    rows = list(await session.scalars(query))
                    if not rows:
                        return sent
                    await self._publisher.publish_raw([(r.topic, r.key, r.value, []) for r in rows])
                    await session.execute(
                        delete(OutboxMessage).where(OutboxMessage.id.in_([r.id for r in rows]))
                    )
                sent += len(rows)
