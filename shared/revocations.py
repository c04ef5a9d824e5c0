"""Revoked token ids, from the compacted ``auth.revocations.v1``, in every service's memory.

Each service process reads the whole topic from the start with a consumer of its own (no
group, nothing committed), so one started after a revocation still knows it, and every
replica sees every revocation. Keys are token ids; a request then costs one set lookup
(:class:`shared.auth.Authenticator`). The fetch wait is short, so a revocation is refused
everywhere well within 5 s of being published.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from shared import topics
from shared.background import BackgroundTask
from shared.envelope import Envelope, wrap
from shared.kafka.producer import Publisher
from shared.messages import TokenRevoked

log = structlog.get_logger(__name__)

REVOKED_TYPE = "token.revoked"
SOURCE = "auth"


def revocation_message(
    token_id: str, *, revoked_at: datetime, expires_at: datetime | None = None
) -> Envelope:
    """The envelope of one revocation; keyed (``account_id``) by the token id, as compaction
    needs (the same convention as ``usage.unattributed.v1``'s user key)."""
    message = TokenRevoked(token_id=token_id, revoked_at=revoked_at, expires_at=expires_at)
    return wrap(
        message, type=REVOKED_TYPE, account_id=token_id, source=SOURCE, occurred_at=revoked_at
    )


async def announce(publisher: Publisher, revocations: Iterable[Envelope]) -> None:
    """Publish revocations and wait for the broker's acknowledgement (or raise PublishError)."""
    await publisher.publish_many((topics.AUTH_REVOCATIONS, env) for env in revocations)


class CompactedReader(ABC):
    """Reads a compacted topic whole from its start with a consumer of its own (no group,
    nothing committed), then follows it; :meth:`_apply` takes each batch.

    ``start`` returns once the topic has been read to its end (or ``catch_up_timeout``
    passed: then it goes on in the background, logged). With ``catch_up_timeout=0`` it
    does not wait: a reader nothing needs before the first request reads in the background.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        client_id: str,
        topic: str,
        catch_up_timeout: float = 20.0,
    ) -> None:
        self.topic = topic
        self.catch_up_timeout = catch_up_timeout
        self.caught_up = False
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            client_id=f"{client_id}-{topic}",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=200,
            metadata_max_age_ms=5_000,
        )
        self._partitions: list[TopicPartition] = []
        self._background = BackgroundTask()
        self._stopping = asyncio.Event()

    @abstractmethod
    def _apply(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        """Take one batch of the topic's records."""

    def _loaded(self) -> None:
        log.info("kafka.compacted_topic_loaded", topic=self.topic)

    async def start(self) -> None:
        await self._consumer.start()
        if self.catch_up_timeout <= 0:
            self._background.start(self.topic, self._run)
            return
        deadline = time.monotonic() + self.catch_up_timeout
        try:
            await asyncio.wait_for(self._catch_up(), timeout=self.catch_up_timeout)
        except (TimeoutError, KafkaError) as exc:
            log.error(
                "kafka.compacted_topic_not_loaded",
                topic=self.topic,
                error=repr(exc),
                waited=round(self.catch_up_timeout - (deadline - time.monotonic()), 1),
            )
        self._background.start(self.topic, self._run)

    async def stop(self) -> None:
        self._stopping.set()
        await self._background.stop()
        await self._consumer.stop()

    async def _assign(self) -> bool:
        """Assign every partition of the topic from its start; False while it does not exist."""
        client: Any = self._consumer._client
        cluster = await client.fetch_all_metadata()
        partitions = cluster.partitions_for_topic(self.topic)
        if not partitions:
            return False
        self._partitions = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self._consumer.assign(self._partitions)
        await self._consumer.seek_to_beginning(*self._partitions)
        return True

    async def _catch_up(self) -> None:
        """Read until every partition is at its end offset and a fetch comes back empty.

        (Tansu reports the end as the last record batch's base offset + 1: the empty fetch
        after reaching it is what says the rest of that batch was read too.)"""
        while not await self._assign():
            log.warning("kafka.compacted_topic_missing", topic=self.topic)
            await asyncio.sleep(1)
        ends = await self._consumer.end_offsets(self._partitions)
        while True:
            batch = await self._consumer.getmany(*self._partitions, timeout_ms=200)
            self._apply(batch)
            if batch:
                continue
            positions = [await self._consumer.position(tp) for tp in self._partitions]
            if all(pos >= ends[tp] for pos, tp in zip(positions, self._partitions, strict=True)):
                break
        self.caught_up = True
        self._loaded()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                if not self._partitions and not await self._assign():
                    await asyncio.sleep(2)
                    continue
                batch = await self._consumer.getmany(timeout_ms=500)
            except KafkaError as exc:
                log.warning("kafka.compacted_fetch_failed", topic=self.topic, error=repr(exc))
                await asyncio.sleep(1)
                continue
            self._apply(batch)


class RevocationWatcher(CompactedReader):
    """Keeps ``revoked`` (a set shared with the app's authenticator) up to date, so a
    service answers its first request knowing every revocation made before it started."""

    def __init__(
        self,
        bootstrap_servers: str,
        revoked: set[str],
        *,
        client_id: str,
        topic: str = topics.AUTH_REVOCATIONS,
        catch_up_timeout: float = 20.0,
    ) -> None:
        super().__init__(
            bootstrap_servers, client_id=client_id, topic=topic, catch_up_timeout=catch_up_timeout
        )
        self.revoked = revoked

    def _loaded(self) -> None:
        log.info("auth.revocations_loaded", revoked=len(self.revoked))

    def _apply(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        for records in batch.values():
            for record in records:
                if not record.key:
                    continue
                token_id = record.key.decode(errors="replace")
                if record.value is None:  # a tombstone: the token is gone (expired)
                    self.revoked.discard(token_id)
                elif token_id not in self.revoked:
                    self.revoked.add(token_id)
                    log.debug("auth.token_revoked", token_id=token_id)
