"""Ingest's background work for the token registry: last uses in, revocations out.

- :class:`UsageFlusher` writes the last uses the authenticator buffered (at most one per
  token per minute) every few seconds, and once more on stop: never a write per request.
- :class:`TokenUseReader` reads the uses the other services send (``auth.token-uses.v1``,
  compacted, read whole at start) into the same buffer, so the flusher stores them too.
- :class:`RevocationRepublisher` announces, at start, every revoked unexpired token the
  topic does not hold (a CLI revocation whose announcement failed; an embedded broker,
  which keeps its topics in memory, restarted), so the registry stays the record.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import structlog
from aiokafka import ConsumerRecord, TopicPartition
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.ingest import tokens
from shared import topics
from shared.background import BackgroundTask
from shared.envelope import Envelope
from shared.kafka import Publisher
from shared.messages import TokenUsed
from shared.revocations import CompactedReader, announce, revocation_message
from shared.tokenuse import TokenUse, UsageBuffer, UsageSink, use_of

log = structlog.get_logger(__name__)


class UsageFlusher(UsageSink):
    """Writes the buffered last uses (ingest's own and the other services') to the registry."""

    name = "token-usage-flush"
    failed_event = "ingest.token_usage_flush_failed"

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        usage: UsageBuffer,
        *,
        interval: float,
    ) -> None:
        super().__init__(usage, interval=interval)
        self._sessions = sessions

    async def _store(self, uses: list[TokenUse]) -> None:
        async with self._sessions() as session, session.begin():
            await tokens.record_uses(session, uses)


class TokenUseReader(CompactedReader):
    """The other services' token uses, into the registry's buffer (newest wins; the store
    only ever moves ``last_used_at`` forward, so a topic read again changes nothing)."""

    def __init__(self, bootstrap_servers: str, usage: UsageBuffer, *, client_id: str) -> None:
        super().__init__(
            bootstrap_servers,
            client_id=client_id,
            topic=topics.AUTH_TOKEN_USES,
            catch_up_timeout=0,  # last uses are not needed before ingest serves: no wait
        )
        self._usage = usage

    def _apply(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        uses = []
        for records in batch.values():
            for record in records:
                if record.value is None:
                    continue
                try:
                    uses.append(use_of(Envelope.parse(record.value).payload(TokenUsed)))
                except ValueError as exc:  # not ours to stall on: logged and passed over
                    log.warning("ingest.token_use_unreadable", error=repr(exc)[:300])
        self._usage.put_back(uses)


class RevocationRepublisher:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        publisher: Publisher,
        known: set[str],
        *,
        retry: float = 5.0,
    ) -> None:
        self._sessions = sessions
        self._publisher = publisher
        self._known = known  # what the topic holds (the service's revocation watcher's set)
        self._retry = retry
        self._background = BackgroundTask()

    async def start(self) -> None:
        self._background.start("revocations-republish", self._run)

    async def stop(self) -> None:
        await self._background.stop()

    async def republish(self) -> int:
        now = datetime.now(UTC)
        async with self._sessions() as session:
            rows = await tokens.revoked_unexpired(session, now=now)
        missing = [
            revocation_message(r.id, revoked_at=r.revoked_at or now, expires_at=r.expires_at)
            for r in rows
            if r.id not in self._known
        ]
        await announce(self._publisher, missing)
        if missing:
            log.warning("ingest.revocations_republished", count=len(missing))
        return len(missing)

    async def _run(self) -> None:
        while True:
            try:
                await self.republish()
                return
            except Exception as exc:
                log.warning("ingest.revocations_republish_failed", error=repr(exc))
                await asyncio.sleep(self._retry)
