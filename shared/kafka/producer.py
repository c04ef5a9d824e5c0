"""A thin publisher over aiokafka's producer: acks=all, batching, lz4, trace id in headers.

aiokafka batches per partition and keeps one request in flight per broker, so callers
publish many messages with :meth:`Publisher.publish_many` (enqueue all, await together)
rather than awaiting each send. Idempotence and transactions stay off: Tansu has neither,
and consumers dedupe instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from shared.envelope import Envelope
from shared.kafka.coalescer import Coalescer
from shared.metrics import KAFKA_PUBLISH_ERRORS, KAFKA_PUBLISHED

log = structlog.get_logger(__name__)

Headers = list[tuple[str, bytes]]


class PublishError(RuntimeError):
    """The broker did not acknowledge in time, or refused the message."""


class Publisher:
    def __init__(
        self,
        bootstrap_servers: str,
        *,
        client_id: str,
        linger_ms: int = 0,
        max_batch_size: int = 1_048_576,
        compression_type: str | None = "lz4",
        timeout: float = 5.0,
    ) -> None:
        self.timeout = timeout
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            acks="all",
            linger_ms=linger_ms,
            max_batch_size=max_batch_size,
            max_request_size=8 * 1_048_576,
            compression_type=compression_type,
            request_timeout_ms=max(int(timeout * 1000), 1000),
            enable_idempotence=False,
        )
        self._started = False
        self._partitioner = DefaultPartitioner()
        self._partitions: dict[tuple[str, bytes], int] = {}
        self._coalescer = Coalescer(self._producer)

    async def start(self) -> None:
        await self._producer.start()
        self._started = True

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self._coalescer.drain()
            await self._producer.stop()

    @property
    def producer(self) -> AIOKafkaProducer:
        return self._producer

    async def publish(self, topic: str, envelope: Envelope) -> None:
        await self.publish_many([(topic, envelope)])

    async def publish_many(self, messages: Iterable[tuple[str, Envelope]]) -> None:
        """Publish and wait until the broker acknowledged every message (or raise)."""
        await self.publish_raw(
            [
                (topic, env.key, env.to_bytes(), [("trace_id", env.trace_id.encode())])
                for topic, env in messages
            ]
        )

    async def publish_keyed(
        self, messages: Sequence[tuple[str, bytes, bytes]], *, headers: Headers
    ) -> None:
        """Many (topic, key, value) at once, coalesced with every other caller's messages
        into one batch per partition (:mod:`shared.kafka.coalescer`); waits for the acks."""
        if not messages:
            return
        try:
            async with asyncio.timeout(self.timeout):
                grouped: dict[tuple[str, int], list[tuple[bytes, bytes]]] = {}
                for topic, key, value in messages:
                    partition = self._partitions.get((topic, key))
                    if partition is None:
                        partition = await self._partition_of(topic, key)
                    grouped.setdefault((topic, partition), []).append((key, value))
                waits: set[asyncio.Future[None]] = set()
                for (topic, partition), items in grouped.items():
                    waits |= self._coalescer.append(topic, partition, items, headers)
                # wait() leaves the batch futures alone when this caller times out; other
                # callers share them (gather would cancel them for everyone).
                finished, _ = await asyncio.wait(waits)
                for future in finished:
                    future.result()
        except (KafkaError, TimeoutError, OSError) as exc:
            KAFKA_PUBLISH_ERRORS.inc()
            log.warning("kafka.publish_failed", error=repr(exc), count=len(messages))
            raise PublishError(f"broker did not acknowledge: {exc!r}") from exc
        KAFKA_PUBLISHED.inc(len(messages))

    async def _partition_of(self, topic: str, key: bytes) -> int:
        """The partition aiokafka's default partitioner picks (murmur2 of the key), cached."""
        cached = self._partitions.get((topic, key))
        if cached is not None:
            return cached
        partitions = sorted(await self._producer.partitions_for(topic))
        partition: int = self._partitioner(key, partitions, partitions)
        if len(self._partitions) > 200_000:
            self._partitions.clear()
        self._partitions[(topic, key)] = partition
        return partition

    async def publish_raw(
        self, messages: Sequence[tuple[str, bytes | None, bytes, Headers]]
    ) -> None:
        """Enqueue every message, then await all acknowledgements within ``timeout``."""
        if not messages:
            return
        try:
            async with asyncio.timeout(self.timeout):
                futures = [
                    await self._producer.send(topic, value=value, key=key, headers=headers)
                    for topic, key, value, headers in messages
                ]
                await asyncio.gather(*futures)
        except (KafkaError, TimeoutError, OSError) as exc:
            KAFKA_PUBLISH_ERRORS.inc()
            log.warning("kafka.publish_failed", error=repr(exc), count=len(messages))
            raise PublishError(f"broker did not acknowledge: {exc!r}") from exc
        KAFKA_PUBLISHED.inc(len(messages))
