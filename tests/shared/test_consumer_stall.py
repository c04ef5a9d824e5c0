"""Stalled consumers are noticed: lag above zero and no progress for CONSUMER_STALL_SECONDS
fails /readyz and sets ``uptake_kafka_consumer_stalled``; an idle consumer never does."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import REGISTRY
from pydantic import BaseModel

from services.notify.app import create_app as create_notify_app
from services.notify.settings import NotifySettings
from shared import topics
from shared.broker import EmbeddedBroker
from shared.envelope import wrap
from shared.kafka import ConsumerRunner, Publisher, Record, ensure_topics
from shared.messages import NotifyRequested, Recipient
from tests.support import http_client, serve_app


class Note(BaseModel):
    n: int


async def _until(predicate: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def _gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


@asynccontextmanager
async def _setup(
    broker: EmbeddedBroker, handle: Callable[[list[Record]], Any], *, stall_seconds: float
) -> AsyncIterator[tuple[ConsumerRunner, Publisher, str]]:
    """A topic and a group of this test's own, a runner on them, and a publisher."""
    suffix = uuid.uuid4().hex[:8]
    topic = f"tests.stall.{suffix}"
    await ensure_topics(broker.bootstrap_servers, [topic], partitions=3)
    publisher = Publisher(broker.bootstrap_servers, client_id="tests")
    await publisher.start()
    runner = ConsumerRunner(
        bootstrap_servers=broker.bootstrap_servers,
        group_id=f"stall-{suffix}",
        topics=[topic],
        handler=handle,
        publisher=publisher,
        stall_seconds=stall_seconds,
    )
    await runner.start()
    try:
        yield runner, publisher, topic
    finally:
        await runner.stop()
        await publisher.stop()


async def _publish(publisher: Publisher, topic: str, notes: list[tuple[str, int]]) -> None:
    await publisher.publish_many(
        [
            (topic, wrap(Note(n=n), type="test.note", account_id=account, source="tests"))
            for account, n in notes
        ]
    )


async def test_a_stuck_handler_stalls_the_group_until_it_moves_again(
    broker: EmbeddedBroker,
) -> None:
    release = asyncio.Event()
    handled: list[int] = []

    async def handle(records: list[Record]) -> None:
        await release.wait()  # a hung call
        handled.extend(r.envelope.payload(Note).n for r in records)

    async with _setup(broker, handle, stall_seconds=1.0) as (runner, publisher, topic):
        group = runner.group_id
        await _publish(publisher, topic, [("acct-a", 1), ("acct-b", 2), ("acct-c", 3)])

        await _until(lambda: runner.progress().stalled and runner.progress().lag == 3)
        progress = runner.progress()
        assert progress.seconds_since_progress >= 1.0
        assert progress.lag_by_topic == {topic: 3}
        assert progress.describe().startswith(f"stalled: consumer group {group} made no progress")
        assert progress.describe().endswith("with lag 3")
        await _until(lambda: _gauge("uptake_kafka_consumer_stalled", group=group) == 1)
        assert _gauge("uptake_kafka_consumer_lag", group=group, topic=topic) == 3
        assert (_gauge("uptake_kafka_consumer_seconds_since_progress", group=group) or 0) >= 1
        assert handled == []

        release.set()
        await _until(lambda: sorted(handled) == [1, 2, 3])
        await _until(lambda: _gauge("uptake_kafka_consumer_stalled", group=group) == 0)
        await _until(lambda: _gauge("uptake_kafka_consumer_lag", group=group, topic=topic) == 0)
        assert runner.progress().describe() == "ok"
    # a stopped runner leaves no stale series behind
    assert _gauge("uptake_kafka_consumer_stalled", group=group) is None


async def test_an_idle_consumer_with_nothing_to_do_is_never_stalled(
    broker: EmbeddedBroker,
) -> None:
    handled: list[int] = []

    async def handle(records: list[Record]) -> None:
        handled.extend(r.envelope.payload(Note).n for r in records)

    stall = 0.5
    async with _setup(broker, handle, stall_seconds=stall) as (runner, publisher, topic):
        group = runner.group_id
        # several records in one partition (one record batch) and one in another; the
        # third partition stays empty
        await _publish(publisher, topic, [("acct-a", n) for n in range(5)] + [("acct-z", 9)])
        await _until(lambda: sorted(handled) == [0, 1, 2, 3, 4, 9])
        await _until(lambda: _gauge("uptake_kafka_consumer_lag", group=group, topic=topic) == 0)

        # idle for four times the threshold: never stalled at any reading
        deadline = time.monotonic() + 4 * stall
        while time.monotonic() < deadline:
            progress = runner.progress()
            assert not progress.stalled, progress
            assert progress.lag == 0
            assert _gauge("uptake_kafka_consumer_stalled", group=group) == 0
            await asyncio.sleep(0.05)
        assert runner.last_batch_at is not None
        assert time.time() - runner.last_batch_at > stall  # no batch for longer than that


async def _until_metrics(client: httpx.AsyncClient, line: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while line not in (text := (await client.get("/metrics")).text):
        assert time.monotonic() < deadline, [t for t in text.splitlines() if "consumer" in t]
        await asyncio.sleep(0.05)


async def test_a_consumer_that_stops_fetching_is_stalled_by_the_brokers_end_offsets(
    broker: EmbeddedBroker,
) -> None:
    """aiokafka's quiet stall: the consumer stops fetching (here: its partitions paused),
    so no highwater moves and getmany just returns nothing; the broker's end offsets
    still show the messages waiting."""
    handled: list[int] = []

    async def handle(records: list[Record]) -> None:
        handled.extend(r.envelope.payload(Note).n for r in records)

    async with _setup(broker, handle, stall_seconds=1.0) as (runner, publisher, topic):
        await _publish(publisher, topic, [("acct-a", 1)])
        await _until(lambda: handled == [1])
        consumer = runner._consumer
        await _until(lambda: bool(consumer.assignment()))
        assigned = sorted(consumer.assignment())
        consumer.pause(*assigned)  # fetching stops...
        await _until(lambda: not consumer._fetcher._in_flight)  # ...once the last fetch is in
        highwaters = [consumer.highwater(tp) for tp in assigned]
        await _publish(publisher, topic, [("acct-a", 2), ("acct-b", 3)])

        await _until(lambda: runner.progress().stalled)
        assert runner.progress().lag >= 1  # Tansu may report an end offset low, never high
        assert handled == [1]
        assert [consumer.highwater(tp) for tp in assigned] == highwaters  # no fetch saw them

        consumer.resume(*assigned)
        await _until(lambda: sorted(handled) == [1, 2, 3])
        await _until(lambda: not runner.progress().stalled and runner.progress().lag == 0)


def _notify_settings(broker: EmbeddedBroker, db: Path, data_dir: Path, group: str) -> Any:
    return NotifySettings(
        KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
        NOTIFY_DATABASE_URL=f"sqlite+aiosqlite:///{db}",
        UPTAKE_DATA_DIR=data_dir,
        NOTIFY_CONSUMER_GROUP=group,
        # the worker's poll writes (claims) the database: every 50 ms, it starved the
        # test's BEGIN EXCLUSIVE past a 60 s busy timeout; a stored request wakes it anyway
        NOTIFY_POLL_INTERVAL=5,
        CONSUMER_STALL_SECONDS=1,
    )


async def test_a_service_whose_consumer_hangs_on_its_database_is_not_ready(
    private_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """notify end to end (its own broker: it consumes the real notify topic): a writer
    holding the database keeps the handler's insert waiting; /readyz answers 503 naming
    the group while database and broker still answer, and 200 again once it moves."""
    db = tmp_path / "notify.db"
    group = f"notify-stall-{uuid.uuid4().hex[:8]}"
    settings = _notify_settings(private_broker, db, tmp_path, group)
    check = f"consumer:{group}"
    async with (
        serve_app(create_notify_app(settings)) as url,
        http_client(base_url=url, timeout=10) as client,
    ):

        async def readyz() -> tuple[int, dict[str, Any]]:
            response = await client.get("/readyz")
            return response.status_code, response.json()

        status, body = await readyz()
        assert (status, body["checks"][check]) == (200, "ok")

        # waits out the service's own writes of the moment (its worker, the audit pruner:
        # over sqlite3's default 5 s on a busy machine), then holds the database
        lock = sqlite3.connect(db, isolation_level=None, timeout=60)
        lock.execute("BEGIN EXCLUSIVE")  # another writer holds the database
        try:
            request = NotifyRequested(
                idempotency_key=f"tg-{uuid.uuid4().hex[:8]}:welcome",
                channel="email",
                template_id="welcome",
                to=[Recipient(email="ada@customer.test", name="Ada")],
                context={"account_name": "Acme"},
            )
            publisher = Publisher(private_broker.bootstrap_servers, client_id="tests")
            await publisher.start()
            try:
                await publisher.publish(
                    topics.NOTIFY_REQUESTS,
                    wrap(request, type="notify.requested", account_id="acct-1", source="tests"),
                )
            finally:
                await publisher.stop()

            deadline = time.monotonic() + 20
            while True:
                status, body = await readyz()
                if status == 503:
                    break
                assert time.monotonic() < deadline, body
                await asyncio.sleep(0.1)
            assert body["status"] == "unavailable"
            assert body["checks"]["database"] == "ok"
            assert body["checks"]["broker"] == "ok"
            assert body["checks"][check].startswith(f"stalled: consumer group {group}")
            assert body["checks"][check].endswith("with lag 1")
            # the gauges follow at the watch's next reading (a quarter of the threshold)
            await _until_metrics(client, f'uptake_kafka_consumer_stalled{{group="{group}"}} 1.0')
            lag = f'uptake_kafka_consumer_lag{{group="{group}",topic="{topics.NOTIFY_REQUESTS}"}}'
            assert f"{lag} 1.0" in (await client.get("/metrics")).text
        finally:
            lock.execute("ROLLBACK")
            lock.close()

        deadline = time.monotonic() + 40
        while True:
            status, body = await readyz()
            if status == 200:
                break
            assert time.monotonic() < deadline, body
            await asyncio.sleep(0.1)
        assert body["checks"][check] == "ok"
        await _until_metrics(client, f'uptake_kafka_consumer_stalled{{group="{group}"}} 0.0')
