"""When each token was last used, kept in memory and handed to whoever stores it.

A request costs one dict lookup: a token is noted at most once per ``interval`` (a minute),
so the registry gets at most one write per token per minute, never one per request.

The registry is in ingest's database; ingest stores its own uses. Every other service
sends its uses on the compacted ``auth.token-uses.v1`` (:class:`UsageReporter`), which
ingest reads whole (``services/ingest/token_upkeep.py``): a token used only on health still
shows when it was last used.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from shared import topics
from shared.background import BackgroundTask
from shared.envelope import Envelope, wrap
from shared.messages import TokenUsed

if TYPE_CHECKING:
    from shared.auth import TokenClaims
    from shared.kafka.producer import Publisher

log = structlog.get_logger(__name__)
USED_TYPE = "token.used"
SUBJECT_MAX = 200

MAX_TRACKED = 100_000


@dataclass(frozen=True, slots=True)
class TokenUse:
    claims: TokenClaims
    used_at: float


class UsageBuffer:
    def __init__(self, *, interval: float = 60.0) -> None:
        self.interval = interval
        self._noted: dict[str, float] = {}
        self._pending: dict[str, TokenUse] = {}

    def note(self, claims: TokenClaims, now: float) -> None:
        last = self._noted.get(claims.token_id)
        if last is not None and now - last < self.interval:
            return
        if len(self._noted) >= MAX_TRACKED:
            self._noted.clear()  # worst case: one extra write per token
        self._noted[claims.token_id] = now
        self._pending[claims.token_id] = TokenUse(claims, now)

    def drain(self) -> list[TokenUse]:
        """The uses noted since the last drain (the caller stores them or puts them back)."""
        pending, self._pending = self._pending, {}
        return list(pending.values())

    def put_back(self, uses: list[TokenUse]) -> None:
        """Uses the store could not take: kept for the next flush (a newer one wins)."""
        for use in uses:
            current = self._pending.get(use.claims.token_id)
            if current is None or current.used_at < use.used_at:
                self._pending[use.claims.token_id] = use


def from_epoch(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch is not None else None


def usage_message(use: TokenUse, *, service: str) -> Envelope:
    """The envelope of one token's latest use, keyed by the token id (compaction keeps the
    newest per token)."""
    claims = use.claims
    message = TokenUsed(
        token_id=claims.token_id[:64],
        subject=claims.subject[:SUBJECT_MAX],
        scopes=list(claims.issued)[:8],
        key_id=claims.key_id,
        issued_at=from_epoch(claims.issued_at),
        expires_at=from_epoch(claims.expires_at),
        used_at=datetime.fromtimestamp(use.used_at, UTC),
        service=service[:40],
    )
    return wrap(message, type=USED_TYPE, account_id=message.token_id, source=service)


def use_of(message: TokenUsed) -> TokenUse:
    """A use read from the topic, as the registry stores it."""
    from shared.auth import TokenClaims

    claims = TokenClaims(
        subject=message.subject,
        scopes=frozenset(message.scopes),
        token_id=message.token_id,
        expires_at=message.expires_at.timestamp() if message.expires_at else None,
        issued=tuple(message.scopes),
        issued_at=message.issued_at.timestamp() if message.issued_at else None,
        key_id=message.key_id,
    )
    return TokenUse(claims, message.used_at.timestamp())


class UsageSink(ABC):
    """Hands what a :class:`UsageBuffer` noted to a store every ``interval`` seconds (and at
    stop); what the store does not take is kept for the next try. Subclasses say where."""

    name = "token-usage"
    failed_event = "auth.token_usage_store_failed"

    def __init__(self, usage: UsageBuffer, *, interval: float) -> None:
        self._usage = usage
        self._interval = interval
        self._background = BackgroundTask()

    @abstractmethod
    async def _store(self, uses: list[TokenUse]) -> None:
        """Where the uses go (the registry's database, or the topic to it)."""

    async def start(self) -> None:
        self._background.start(self.name, self._run)

    async def stop(self) -> None:
        await self._background.stop()
        await self.flush()

    async def flush(self) -> int:
        uses = self._usage.drain()
        if not uses:
            return 0
        try:
            await self._store(uses)
        except Exception as exc:  # the store is away: keep them for the next flush
            self._usage.put_back(uses)
            log.warning(self.failed_event, tokens=len(uses), error=repr(exc))
            return 0
        return len(uses)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()


class UsageReporter(UsageSink):
    """Sends the uses a service noted to ingest's registry, on ``auth.token-uses.v1``."""

    name = "token-usage-report"
    failed_event = "auth.token_usage_report_failed"

    def __init__(
        self, publisher: Publisher, usage: UsageBuffer, *, service: str, interval: float
    ) -> None:
        super().__init__(usage, interval=interval)
        self._publisher = publisher
        self._service = service

    async def _store(self, uses: list[TokenUse]) -> None:
        await self._publisher.publish_many(
            (topics.AUTH_TOKEN_USES, usage_message(u, service=self._service)) for u in uses
        )
