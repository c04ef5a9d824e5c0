"""The consumer runner on a real broker: commit after effect, retries, dead letters."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

from aiokafka import TopicPartition
from pydantic import BaseModel

from shared import topics
from shared.broker import EmbeddedBroker
from shared.envelope import wrap
from shared.kafka import ConsumerRunner, Publisher, Record, TransientError
from shared.kafka.consumer import backlog_waiting
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
    from aiokafka import AIOKafkaConsumer

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


# A group member that joined, got its partitions and read nothing: SIGKILLed, its partitions
# wait out its session before anyone else may take them.
_MEMBER = """
import asyncio, sys
from aiokafka import AIOKafkaConsumer

async def main() -> None:
    consumer = AIOKafkaConsumer(
        sys.argv[2], bootstrap_servers=sys.argv[1], group_id=sys.argv[3],
        enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=1000,
    )
    await consumer.start()
    while not consumer.assignment():
        await asyncio.sleep(0.05)
    print("assigned", flush=True)
    while True:
        await consumer.getmany(timeout_ms=200)

asyncio.run(main())
"""


async def test_behind_until_a_killed_members_partitions_are_handed_over(
    private_broker: EmbeddedBroker,
) -> None:
    """A successor's empty fetches while the group waits for a dead member are not
    "caught up": health would judge a half-consumed history (a transient alert)."""
    import signal
    import subprocess
    import sys

    bootstrap = private_broker.bootstrap_servers
    topic, group = topics.ACCOUNTS, "orphan-test"
    publisher = Publisher(bootstrap, client_id="tests")
    await publisher.start()
    await _publish(publisher, topic, "acct-orphan", list(range(20)))
    member = subprocess.Popen(
        [sys.executable, "-c", _MEMBER, bootstrap, topic, group], stdout=subprocess.PIPE
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(member.stdout.readline), 60)  # type: ignore[union-attr]
        assert line.strip() == b"assigned"
    finally:
        member.send_signal(signal.SIGKILL)
        member.wait()
    handled: list[int] = []
    samples: list[tuple[int, bool]] = []

    async def handle(records: list[Record]) -> None:
        handled.extend(r.envelope.payload(Note).n for r in records)

    runner = ConsumerRunner(
        bootstrap_servers=bootstrap,
        group_id=group,
        topics=[topic],
        handler=handle,
        publisher=publisher,
    )
    await runner.start()
    started = time.monotonic()
    while not (len(handled) == 20 and not runner.behind):
        samples.append((len(handled), runner.behind))
        assert time.monotonic() - started < 60, "the backlog was not consumed in time"
        await asyncio.sleep(0.02)
    await runner.stop()
    await publisher.stop()
    waited = [behind for n, behind in samples if n == 0]
    assert waited and all(waited), "caught up before the dead member's partitions came"
    assert sorted(handled) == list(range(20))


def test_backlog_waiting_until_the_assignment_is_fetched() -> None:
    p0, p1 = TopicPartition("t", 0), TopicPartition("t", 1)
    known = {p0: 100, p1: 40}

    def waiting(**kw: object) -> bool:
        args: dict[str, object] = {
            "assigned": True,
            "highwaters": known,
            "next_offsets": {},
            "fetched": 0,
            "max_batch": 100,
        }
        return backlog_waiting(**{**args, **kw})  # type: ignore[arg-type]

    assert waiting() is False  # an empty fetch on fetched partitions: caught up
    assert waiting(assigned=False) is True  # joining, or waiting out a dead member
    assert waiting(highwaters={p0: 100, p1: None}) is True  # p1 not fetched yet
    assert waiting(highwaters={}) is False  # no partitions: nothing to wait for
    assert waiting(fetched=100) is True  # a full batch
    assert waiting(next_offsets={p0: 80}, fetched=20) is False  # 20 left: live traffic
    assert waiting(next_offsets={p0: 70, p1: 10}, fetched=20) is True  # 60 left: a backlog
    # the first records since the assignment resume another member's work: a backlog
    assert waiting(next_offsets={p0: 100}, fetched=3, fresh=True) is True
    assert waiting(fresh=True) is False  # nothing came: nothing was left
