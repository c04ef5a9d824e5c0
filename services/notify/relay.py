"""The outbox relay: Kafka messages stored with their change are published after commit.

"Publish after commit" without losing anything: an event is a row written in the same
transaction as the delivery change that caused it, and is marked published only once the
broker acknowledged. A crash in between publishes it again, with the same envelope id,
which consumers dedupe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.notify import repository
from shared.kafka import Publisher, PublishError

log = structlog.get_logger(__name__)
KEEP_PUBLISHED = timedelta(days=7)
PRUNE_EVERY_SECONDS = 3600.0


class OutboxRelay:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        publisher: Publisher,
        clock: Callable[[], datetime],
    ) -> None:
        self.sessions = sessions
        self.publisher = publisher
        self.clock = clock
        self._pruned_at: float | None = None

    async def publish_pending(self) -> int:
        """Publish stored events in order; mark them only after the broker acknowledged."""
        total = 0
        while True:
            async with self.sessions() as session:
                rows = await repository.pending_outbox(session, limit=500)
            if not rows:
                return total
            try:
                await self.publisher.publish_raw(
                    [
                        (r.topic, r.key, r.value, [(k, v.encode()) for k, v in r.headers])
                        for r in rows
                    ]
                )
            except PublishError as exc:
                log.warning("notify.relay_failed", error=repr(exc), pending=len(rows))
                return total
            async with self.sessions() as session, session.begin():
                await repository.mark_published(session, [r.id for r in rows], now=self.clock())
            total += len(rows)

    async def prune(self) -> None:
        """Published events are kept a week (for inspection), then deleted; hourly."""
        now = asyncio.get_running_loop().time()
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY_SECONDS:
            return
        self._pruned_at = now
        async with self.sessions() as session, session.begin():
            await repository.prune_outbox(session, before=self.clock() - KEEP_PUBLISHED)
