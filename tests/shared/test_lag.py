"""The lag probe counts from the true end of a partition, not from what Tansu's
ListOffsets reports (the base offset of the last record batch, plus one)."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.broker import EmbeddedBroker
from shared.kafka import ensure_topics
from shared.kafka.lag import LagProbe


async def _commit(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


async def test_lag_is_counted_to_the_last_record_of_the_last_batch(
    broker: EmbeddedBroker,
) -> None:
    bootstrap = broker.bootstrap_servers
    topic, other = f"lag-{uuid.uuid4().hex[:8]}", f"lag-{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, [topic, other], partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=200)
    await producer.start()
    try:
        # one record batch of 500: ListOffsets(latest) says 1, the true end is 500
        sent = [await producer.send(topic, b"x", partition=0) for _ in range(500)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    tp = TopicPartition(topic, 0)
    peek = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await peek.start()
    try:
        reported = (await peek.end_offsets([tp]))[tp]
    finally:
        await peek.stop()
    assert reported < 380  # the quirk this probe works around: trusted, lag would be 0
    group, idle = f"g-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    await _commit(bootstrap, group, {tp: 120})

    probe = LagProbe(bootstrap, {group: [topic], idle: [topic, other]})
    await probe.start()
    try:
        lag = await probe.lag()
        assert lag.settled
        assert lag.behind == {group: {topic: 380}, idle: {topic: 500, other: 0}}
        assert lag.total == 880 and lag.groups_behind == [group, idle]
        assert (await probe.lag([group])).behind == {group: {topic: 380}}

        await _commit(bootstrap, group, {tp: 500})
        lag = await probe.lag([group])
        assert lag.total == 0 and lag.nonzero() == {}
    finally:
        await probe.stop()
