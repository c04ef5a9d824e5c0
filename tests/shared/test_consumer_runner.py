"""The consumer runner on a real broker: commit after effect, retries, dead letters."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

from pydantic import BaseModel

from shared import topics
from shared.broker import EmbeddedBroker
from shared.envelope import wrap
from shared.kafka import ConsumerRunner, Publisher, Record, TransientError
from tests.support import read_topic


class Note(BaseModel):
    n: int


async def _publish(publisher: Publisher, topic: str, account: str, values: list[int]) -> None:
    await publisher.publish_many(
        [
            (topic, wrap(Note(n=v), type="test.note", account_id=account, source="tests"))
            for v in values
        ]
    )


async def _until(predicate: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_commit_after_effect_retry_and_dead_letter(private_broker: EmbeddedBroker) -> None:
    bootstrap = private_broker.bootstrap_servers
    topic = topics.ACCOUNTS
    account = f"acct-{uuid.uuid4().hex[:8]}"
    publisher = Publisher(bootstrap, client_id="tests")
    await publisher.start()
    stored: list[int] = []
    transient_failures = {"left": 2}

    async def handle(records: list[Record]) -> None:
        values = [r.envelope.payload(Note).n for r in records]
        if 13 in values:
            raise ValueError("13 is poison")
        if transient_failures["left"]:
            transient_failures["left"] -= 1
            raise TransientError("database away")
        stored.extend(values)

    def runner() -> ConsumerRunner:
        return ConsumerRunner(
            bootstrap_servers=bootstrap,
            group_id="runner-test",
            topics=[topic],
            handler=handle,
            publisher=publisher,
            max_retries=1,
            backoff=0.01,
        )

    first = runner()
    await first.start()
    await _publish(publisher, topic, account, [1, 2, 13, 4])
    await publisher.producer.send_and_wait(topic, b"not json", key=account.encode())
    await _until(lambda: sorted(stored) == [1, 2, 4])
    await first.stop()

    dead = await read_topic(bootstrap, topics.dlq(topic), match=lambda e: True, count=1)
    assert [e.payload(Note).n for e in dead] == [13]
    # the undecodable message went to the DLQ too (read raw: it is not an envelope)
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    tps = [TopicPartition(topics.dlq(topic), p) for p in range(3)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    raw = [r.value for recs in (await consumer.getmany(timeout_ms=2000)).values() for r in recs]
    await consumer.stop()
    assert b"not json" in raw

    # a second consumer in the same group sees nothing again: offsets were committed
    second = runner()
    await second.start()
    await _publish(publisher, topic, account, [5])
    await _until(lambda: 5 in stored)
    await second.stop()
    assert sorted(stored) == [1, 2, 4, 5]
    await publisher.stop()


async def test_behind_while_a_backlog_is_replayed(private_broker: EmbeddedBroker) -> None:
    bootstrap = private_broker.bootstrap_servers
    publisher = Publisher(bootstrap, client_id="tests")
    await publisher.start()
    await _publish(publisher, topics.HEALTH_SCORES, "acct-backlog", list(range(45)))
    seen: list[tuple[int, bool]] = []

    async def handle(records: list[Record]) -> None:
        seen.append((len(records), runner.behind))

    runner = ConsumerRunner(
        bootstrap_servers=bootstrap,
        group_id="backlog-test",
        topics=[topics.HEALTH_SCORES],
        handler=handle,
        publisher=publisher,
        max_batch=10,
    )
    await runner.start()
    await _until(lambda: sum(n for n, _ in seen) == 45)
    await _until(lambda: not runner.behind)
    await runner.stop()
    await publisher.stop()
    assert seen[0] == (10, True)  # full batches: a backlog
    assert seen[-1][1] is False  # the last, partial one caught up
