"""Parked events leave ingest's database: released once their user is linked, or sent
to ``usage.unattributed.v1`` once older than ``INGEST_PENDING_MAX_AGE``.

Both go in chunks, each published (and acknowledged by the broker) before its rows are
deleted: a crash in between publishes them again with the same message ids, which
consumers dedupe. On PostgreSQL each chunk's rows are locked (``SKIP LOCKED``) until
they are deleted, so several replicas share the work without publishing a row twice.
The releaser runs in the background: a request that links a user only asks for a
release; the rows stay parked until it is done, and every sweep (also right after
start) releases whatever an earlier process left behind.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import structlog
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.ingest import repository as repo
from services.ingest.accounts import DATABASE_TROUBLE
from services.ingest.tracking import envelope_bytes
from shared import topics
from shared.background import BackgroundTask, wait_for_event
from shared.kafka import Publisher, PublishError

log = structlog.get_logger(__name__)

PENDING_RELEASED = Counter(
    "uptake_ingest_pending_released_total", "Parked events published once their user was linked"
)
PENDING_EXPIRED = Counter(
    "uptake_ingest_pending_expired_total",
    "Parked events past INGEST_PENDING_MAX_AGE, published to usage.unattributed.v1",
)
UNATTRIBUTED_TYPE = "usage.unattributed"


class PendingReleaser:
    """A background task: releases on request, sweeps every ``interval`` seconds."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        publisher: Publisher,
        *,
        max_age: timedelta,
        interval: float,
        chunk: int = 1000,
    ) -> None:
        self._sessions = sessions
        self._publisher = publisher
        self._max_age = max_age
        self._interval = interval
        self._chunk = chunk
        self._wanted: set[str] = set()
        self._wake = asyncio.Event()
        self._background = BackgroundTask()

    async def start(self) -> None:
        self._background.start("ingest-pending-releaser", self._run)

    async def stop(self) -> None:
        await self._background.stop()

    async def flush(self) -> None:
        """Stop the background loop, then release every linked user's parked events now
        (the drain before a stop). A pass cut short leaves its rows parked: crash-safe."""
        await self.stop()
        try:
            released = await self.release(None)
        except (*DATABASE_TROUBLE, PublishError) as exc:
            log.warning("ingest.pending_flush_failed", error=repr(exc)[:500])
            return
        if released:
            log.info("ingest.pending_flushed", events=released)

    def request(self, keys: set[str]) -> None:
        """Release the parked events of these users (and their aliases) soon."""
        if keys:
            self._wanted |= keys
            self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = loop.time()
        while True:
            timeout = max(0.0, next_sweep - loop.time())
            await wait_for_event(self._wake, timeout)
            self._wake.clear()
            keys, self._wanted = self._wanted, set()
            sweep = loop.time() >= next_sweep
            try:
                if keys:
                    await self.release(keys)
                if sweep:
                    await self.sweep()
            except (*DATABASE_TROUBLE, PublishError) as exc:
                log.warning("ingest.pending_pass_failed", error=repr(exc)[:500])
                self._wanted |= keys  # try again at the next pass
                await asyncio.sleep(min(1.0, self._interval))
            except Exception as exc:
                # the rows stay parked either way; the loop must outlive one bad pass
                log.error("ingest.pending_pass_crashed", error=repr(exc)[:500])
                self._wanted |= keys
                await asyncio.sleep(min(5.0, self._interval))
            if sweep:
                next_sweep = loop.time() + self._interval

    async def sweep(self) -> None:
        """Release every parked event whose user is linked now, then expire the old."""
        await self.release(None)
        await self.expire()

    async def release(self, keys: set[str] | None) -> int:
        """Publish the parked events of ``keys`` (None: of every linked user), chunk by
        chunk; returns how many were published."""
        total = 0
        while True:
            async with self._sessions() as session, session.begin():
                rows = await repo.releasable(session, keys=keys, limit=self._chunk)
                if not rows:
                    return total
                now = datetime.now(UTC)
                await self._publisher.publish_keyed(
                    [
                        (
                            topics.USAGE_EVENTS,
                            r.account_id.encode(),
                            envelope_bytes(
                                type=r.event.kind,
                                account_id=r.account_id,
                                data=r.event.data,
                                occurred_at=r.event.occurred_at,
                                produced_at=now,
                                trace_id=r.event.trace_id,
                            ),
                        )
                        for r in rows
                    ],
                    headers=[],
                )
                await repo.delete_pending(session, [r.event.id for r in rows])
            total += len(rows)
            PENDING_RELEASED.inc(len(rows))
            if len(rows) < self._chunk:
                return total

    async def expire(self) -> int:
        """Send parked events older than the max age to ``usage.unattributed.v1``."""
        total = 0
        while True:
            async with self._sessions() as session, session.begin():
                before = datetime.now(UTC) - self._max_age
                rows = await repo.expired(session, before=before, limit=self._chunk)
                if not rows:
                    return total
                now = datetime.now(UTC)
                messages = [
                    (
                        topics.USAGE_UNATTRIBUTED,
                        row.user_key.encode(),
                        envelope_bytes(
                            type=UNATTRIBUTED_TYPE,
                            account_id=row.user_key,
                            data={
                                **row.data,
                                "user_key": row.user_key,
                                "parked_at": row.parked_at.isoformat(),
                            },
                            occurred_at=row.occurred_at,
                            produced_at=now,
                            trace_id=row.trace_id,
                        ),
                    )
                    for row in rows
                ]
                await self._publisher.publish_keyed(messages, headers=[])
                await repo.delete_pending(session, [row.id for row in rows])
            total += len(rows)
            PENDING_EXPIRED.inc(len(rows))
            log.warning("ingest.pending_expired", events=len(rows))
            if len(rows) < self._chunk:
                return total
