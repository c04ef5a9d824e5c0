"""The publisher's coalescing lanes on a real broker: every caller acked, order kept."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition

from shared import topics
from shared.broker import EmbeddedBroker
from shared.kafka import Publisher


async def test_concurrent_callers_are_coalesced_acked_and_ordered(broker: EmbeddedBroker) -> None:
    publisher = Publisher(broker.bootstrap_servers, client_id="coalesce-test")
    await publisher.start()
    topic, key = topics.HEALTH_SCORES, b"coalesce-acct"
    try:
        await asyncio.gather(
            *(
                publisher.publish_keyed(
                    [(topic, key, f"{caller}:{i}".encode()) for i in range(5)], headers=[]
                )
                for caller in range(200)
            )
        )
        partition = publisher._partitions[(topic, key)]
    finally:
        await publisher.stop()

    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap_servers)
    await consumer.start()
    tp = TopicPartition(topic, partition)
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    values: list[str] = []
    for _ in range(50):
        batch = await consumer.getmany(tp, timeout_ms=200)
        values += [r.value.decode() for r in batch.get(tp, []) if r.key == key]
        if len(values) >= 1000:
            break
    await consumer.stop()
    assert len(values) == 1000 and len(set(values)) == 1000
    for caller in range(200):  # each caller's messages in the order it gave them
        mine = [v for v in values if v.startswith(f"{caller}:")]
        assert mine == [f"{caller}:{i}" for i in range(5)]
