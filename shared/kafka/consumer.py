"""The consumer runner: batches in, handler stores the effect, then offsets are committed.

"Nothing lost, nothing twice" without broker transactions: the handler stores a batch
(and its dedupe marks) in one database transaction and returns; only then are the
offsets committed. A crash in between replays the batch, which idempotent handlers
absorb. A handler raising :class:`TransientError` (or a connection error) is retried
with backoff until it succeeds; any other error is retried a few times, then the batch
is split to find the poison messages, which go to ``<topic>.dlq`` so the rest flows on.
A ``decode`` function (bytes -> envelope and a payload for ``Record.payload``) lets a
service read each message once; what it refuses is dead-lettered at once, unretried.
Beside the loop, a watch reads the lag every few seconds and tells when the group has
stalled (:mod:`shared.kafka.progress`): readiness and the gauges read ``progress``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError

from shared import topics
from shared.background import finish_within
from shared.envelope import Envelope
from shared.kafka.producer import Publisher, PublishError
from shared.kafka.progress import Progress, ProgressWatch
from shared.metrics import (
    KAFKA_CONSUMED,
    KAFKA_DEAD_LETTERED,
    KAFKA_HANDLER_RETRIES,
    KAFKA_HANDLER_SECONDS,
)
from shared.settings import DEFAULT_STALL_SECONDS

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


# A SIGKILLed replica's partitions move after this. Tansu also holds a new group's first
# join for half of it (a new consumer starts in 2 s at 4 s, in 3 s at 6 s), while four
# heartbeats a session leave room for a busy event loop.
SESSION_TIMEOUT_MS = 4_000

# How long stop() lets the batch in hand finish and commit before cutting it short (it is
# then replayed after the restart). deploy/k8s grace periods cover it.
STOP_TIMEOUT_SECONDS = 25.0


class Membership(ConsumerRebalanceListener):  # type: ignore[misc]
    """Whether the group has handed this consumer its partitions (between a revocation
    and the next assignment an empty fetch says nothing about what is left to read), and
    whether records came since (the first resume where another member left off)."""

    def __init__(self) -> None:
        self.assigned = False
        self.fresh = False  # assigned, and no records since

    async def on_partitions_revoked(self, revoked: object) -> None:
        self.assigned = False

    async def on_partitions_assigned(self, assigned: object) -> None:
        self.assigned = True
        self.fresh = True


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, TRANSIENT)


def backlog_waiting(
    *,
    assigned: bool,
    highwaters: dict[TopicPartition, int | None],
    next_offsets: dict[TopicPartition, int],
    fetched: int,
    max_batch: int,
    fresh: bool = False,
) -> bool:
    """Whether a backlog may be waiting after a fetch (``fetched`` records, the next offset
    of each partition they came from). Lets a handler hold decisions that need the whole
    picture (alerts) while a backlog is replayed after a restart or a stall:

    - no assignment yet (joining, or a rebalance waiting out a dead member's session):
      an empty fetch then says nothing about what is left;
    - a partition not fetched since its assignment (its high watermark is unknown);
    - the first records since the assignment (``fresh``): they resume where another
      member left off, maybe one that died halfway through a history, so they are
      treated as a backlog however few they are;
    - a full batch, or more than a quarter batch still behind the high watermarks.

    The few messages that arrive while a batch is handled under live traffic are not a
    backlog. A consumer given no partitions has none: there is nothing for it.
    """
    if not assigned or fetched >= max_batch or (fresh and fetched > 0):
        return True
    if any(highwater is None for highwater in highwaters.values()):
        return True
    lag = sum(max(0, (highwaters.get(tp) or 0) - offset) for tp, offset in next_offsets.items())
    return lag > max_batch // 4


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
        stall_seconds: float = DEFAULT_STALL_SECONDS,
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
        self._membership = Membership()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            client_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_batch,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=1_000,
            max_poll_interval_ms=600_000,
            fetch_max_wait_ms=100,
        )
        self._consumer.subscribe(topics=list(topics), listener=self._membership)
        self._task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._watch = ProgressWatch(group_id, topics, stall_seconds=stall_seconds)
        # first offset of the batch in hand per partition: not done until it is committed
        self._in_hand: dict[TopicPartition, int] = {}
        self._stopping = asyncio.Event()
        self.last_batch_at: float | None = None
        self.behind = True  # a backlog may be waiting (backlog_waiting), until a fetch says not

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name=f"consumer:{self.group_id}")
        self._watch_task = asyncio.create_task(
            self._watch_lag(), name=f"consumer-watch:{self.group_id}"
        )

    async def stop(self) -> None:
        """Finish the batch in hand, commit it, leave the group."""
        self._stopping.set()
        await finish_within(self._task, STOP_TIMEOUT_SECONDS)
        if self._watch_task is not None:
            self._watch_task.cancel()
            await asyncio.gather(self._watch_task, return_exceptions=True)
        self._watch.forget()
        await self._consumer.stop()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def progress(self) -> Progress:
        """Lag at the last reading and whether the group has stalled (judged now)."""
        return self._watch.snapshot()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                batch = await self._consumer.getmany(timeout_ms=200, max_records=self.max_batch)
            except KafkaError as exc:
                log.warning("kafka.fetch_failed", group=self.group_id, error=repr(exc))
                await asyncio.sleep(1)
                continue
            self.behind = self._backlog_after(batch)
            if not batch:
                continue
            self._membership.fresh = False  # records came since the assignment
            raw = [msg for msgs in batch.values() for msg in msgs]
            self._in_hand = {tp: msgs[0].offset for tp, msgs in batch.items() if msgs}
            records = await self._decode(raw)
            if records:
                await self._handle(records)
            await self._commit(raw)
            self._in_hand = {}
            self._watch.progressed()
            KAFKA_CONSUMED.labels(self.group_id).inc(len(raw))
            self.last_batch_at = time.time()

    async def _watch_lag(self) -> None:
        """Read the lag every ``interval`` until stopped; a failed reading keeps the last."""
        while True:
            try:
                self._watch.observe(await self._lag())
            except Exception as exc:  # the watch outlives any one bad reading
                log.warning("kafka.lag_unknown", group=self.group_id, error=repr(exc))
            await asyncio.sleep(self._watch.interval)

    async def _lag(self) -> dict[str, int]:
        """Messages waiting per topic on this consumer's partitions: the end offset (the
        broker's, or the last fetch's highwater if larger) minus what is done (the start of
        the batch in hand, else the position: every record handed out before is committed).
        The broker's end offset catches a consumer that stopped fetching, whose highwater
        no longer moves; Tansu may report it low (see tests/support.py
        ``true_end_offsets``), never high, so it cannot invent a lag."""
        assigned = sorted(self._consumer.assignment())
        ends = await self._end_offsets(assigned)
        positions = await asyncio.gather(*(self._position(tp) for tp in assigned))
        lag: dict[str, int] = {}
        for tp, position in zip(assigned, positions, strict=True):
            done = self._in_hand.get(tp, position)  # the position already passed a batch in hand
            if done is None or tp not in self._consumer.assignment():
                continue  # no position yet, or revoked meanwhile
            end = max(ends.get(tp, 0), self._consumer.highwater(tp) or 0)
            lag[tp.topic] = lag.get(tp.topic, 0) + max(0, end - done)
        return lag

    async def _end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        if not tps:
            return {}
        try:
            async with asyncio.timeout(min(2.0, self._watch.interval * 2)):
                offsets: dict[TopicPartition, int] = await self._consumer.end_offsets(tps)
                return offsets
        except (KafkaError, TimeoutError) as exc:
            log.debug("kafka.end_offsets_failed", group=self.group_id, error=repr(exc))
            return {}  # the highwaters alone, then

    async def _position(self, tp: TopicPartition) -> int | None:
        """The partition's position, or None while it has none (aiokafka would wait for it)."""
        try:
            async with asyncio.timeout(0.5):
                position: int = await self._consumer.position(tp)
                return position
        except (IllegalStateError, KafkaError, TimeoutError):
            return None

    def _backlog_after(
        self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    ) -> bool:
        tps = set(self._consumer.assignment())  # highwater() asserts a partition is assigned
        fetched = sum(len(msgs) for msgs in batch.values())
        return backlog_waiting(
            assigned=self._membership.assigned,
            highwaters={tp: self._consumer.highwater(tp) for tp in tps},
            next_offsets={tp: m[-1].offset + 1 for tp, m in batch.items() if m and tp in tps},
            fetched=fetched,
            max_batch=self.max_batch,
            fresh=self._membership.fresh,
        )

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
