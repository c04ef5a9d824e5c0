"""The consumer runner: batches in, handler stores the effect, then offsets are committed.

"Nothing lost, nothing twice" without broker transactions: the handler stores a batch
(and its dedupe marks) in one database transaction and returns; only then are the
offsets committed. A crash in between replays the batch, which idempotent handlers
absorb. A handler raising :class:`TransientError` (or a connection error) is retried
with backoff until it succeeds; any other error is retried a few times, then the batch
is split to find the poison messages, which go to ``<topic>.dlq`` so the rest flows on.
A ``decode`` function (bytes -> envelope and a payload for ``Record.payload``) lets a
service read each message once; what it refuses is dead-lettered at once, unretried.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError

from shared import topics
from shared.envelope import Envelope
from shared.kafka.producer import Publisher, PublishError
from shared.metrics import (
    KAFKA_CONSUMED,
    KAFKA_DEAD_LETTERED,
    KAFKA_HANDLER_RETRIES,
    KAFKA_HANDLER_SECONDS,
)

log = structlog.get_logger(__name__)


class TransientError(Exception):
    """The effect could not be stored for now (database down...): retry, never dead-letter."""


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    envelope: Envelope
    payload: Any = None  # what the runner's ``decode`` made of ``data`` (None: not decoded)


Handler = Callable[[list[Record]], Awaitable[None]]
# bytes -> (envelope, decoded payload or None); ValueError/ValidationError dead-letters
Decoder = Callable[[bytes], tuple[Envelope, Any]]


def parse_envelope(raw: bytes) -> tuple[Envelope, Any]:
    """The default decoder: the envelope only; handlers read ``data`` themselves."""
    return Envelope.parse(raw), None


TRANSIENT = (TransientError, OperationalError, ConnectionError, OSError, PublishError)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, TRANSIENT)


class ConsumerRunner:
    """Runs one consumer group over some topics with one batch handler."""

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        group_id: str,
        topics: list[str],
        handler: Handler,
        publisher: Publisher,
        max_batch: int = 1000,
        max_retries: int = 3,
        backoff: float = 0.2,
        max_backoff: float = 10.0,
        decode: Decoder = parse_envelope,
    ) -> None:
        self.group_id = group_id
        self.decode = decode
        self.topics = topics
        self.handler = handler
        self.publisher = publisher
        self.max_batch = max_batch
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            client_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_batch,
            session_timeout_ms=6_000,
            heartbeat_interval_ms=1_000,
            max_poll_interval_ms=600_000,
            fetch_max_wait_ms=100,
        )
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.last_batch_at: float | None = None
        self.behind = True  # until a fetch shows otherwise

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name=f"consumer:{self.group_id}")

    async def stop(self) -> None:
        """Finish the batch in hand, commit it, leave the group."""
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=30)
            except TimeoutError:
                self._task.cancel()
        await self._consumer.stop()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                batch = await self._consumer.getmany(timeout_ms=200, max_records=self.max_batch)
            except KafkaError as exc:
                log.warning("kafka.fetch_failed", group=self.group_id, error=repr(exc))
                await asyncio.sleep(1)
                continue
            if not batch:
                self.behind = False
                continue
            raw = [msg for msgs in batch.values() for msg in msgs]
            self.behind = self._backlog_after(batch)
            records = await self._decode(raw)
            if records:
                await self._handle(records)
            await self._commit(raw)
            KAFKA_CONSUMED.labels(self.group_id).inc(len(raw))
            self.last_batch_at = time.time()

    def _backlog_after(
        self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    ) -> bool:
        """Whether a backlog is waiting: the batch was full, or more than a quarter batch
        is still behind the high watermarks. Lets a handler hold decisions that need the
        whole picture (alerts) while a backlog is replayed after a restart or a stall;
        the few messages that arrive while a batch is handled under live traffic are not
        a backlog."""
        if sum(len(msgs) for msgs in batch.values()) >= self.max_batch:
            return True
        lag = 0
        for tp, msgs in batch.items():
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                lag += max(0, highwater - (msgs[-1].offset + 1))
        return lag > self.max_batch // 4

    async def _decode(self, raw: list[ConsumerRecord[bytes, bytes]]) -> list[Record]:
        records: list[Record] = []
        for msg in raw:
            try:
                envelope, payload = self.decode(msg.value or b"")
            except (ValueError, ValidationError) as exc:
                await self._dead_letter(
                    msg.topic, msg.partition, msg.offset, msg.key, msg.value, exc
                )
                continue
            records.append(Record(msg.topic, msg.partition, msg.offset, envelope, payload))
        return records

    async def _handle(self, records: list[Record]) -> None:
        started = time.perf_counter()
        error = await self._attempt(records)
        if error is not None:
            # Some message in the batch is poison: handle one at a time, dead-letter the bad.
            for record in records:
                single_error = await self._attempt([record])
                if single_error is not None:
                    env = record.envelope
                    await self._dead_letter(
                        record.topic,
                        record.partition,
                        record.offset,
                        env.key,
                        env.to_bytes(),
                        single_error,
                    )
        KAFKA_HANDLER_SECONDS.labels(self.group_id).observe(time.perf_counter() - started)

    async def _attempt(self, records: list[Record]) -> BaseException | None:
        """Run the handler; retry transient errors until they pass, others a few times."""
        failures = 0
        # a lone record's trace id goes on every log line its handling writes
        trace = {"trace_id": records[0].envelope.trace_id} if len(records) == 1 else {}
        while True:
            try:
                with structlog.contextvars.bound_contextvars(**trace):
                    await self.handler(records)
                return None
            except Exception as exc:
                failures += 1
                KAFKA_HANDLER_RETRIES.labels(self.group_id).inc()
                transient = _is_transient(exc)
                if not transient and failures > self.max_retries:
                    log.error(
                        "kafka.handler_failed",
                        group=self.group_id,
                        error=repr(exc),
                        batch=len(records),
                    )
                    return exc
                delay = min(self.max_backoff, self.backoff * 2 ** min(failures, 10))
                delay *= random.uniform(0.5, 1.0)
                log.warning(
                    "kafka.handler_retry",
                    group=self.group_id,
                    error=repr(exc),
                    attempt=failures,
                    transient=transient,
                    delay=round(delay, 3),
                )
                await asyncio.sleep(delay)

    async def _dead_letter(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        error: BaseException,
    ) -> None:
        headers = [
            ("x-original-topic", topic.encode()),
            ("x-original-partition", str(partition).encode()),
            ("x-original-offset", str(offset).encode()),
            ("x-consumer-group", self.group_id.encode()),
            ("x-error", repr(error)[:1000].encode()),
        ]
        while True:
            try:
                await self.publisher.publish_raw([(topics.dlq(topic), key, value or b"", headers)])
                break
            except PublishError:
                await asyncio.sleep(1)  # the DLQ write must land before we commit past it
        KAFKA_DEAD_LETTERED.labels(topic).inc()
        log.error(
            "kafka.dead_lettered",
            topic=topic,
            partition=partition,
            offset=offset,
            error=repr(error),
        )

    async def _commit(self, raw: list[ConsumerRecord[bytes, bytes]]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for msg in raw:
            tp = TopicPartition(msg.topic, msg.partition)
            offsets[tp] = max(offsets.get(tp, 0), msg.offset + 1)
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance took the partitions: the new owner replays, handlers dedupe.
            log.warning("kafka.commit_failed", group=self.group_id, error=repr(exc))
