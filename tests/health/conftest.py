"""Health fixtures: the service on loopback, envelopes built the way ingest builds them."""

from __future__ import annotations

import asyncio
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from fastapi import FastAPI

from services.health import repository as repo
from services.health.app import create_app
from services.health.context import HealthContext
from services.health.settings import HealthSettings
from shared import topics
from shared.broker import EmbeddedBroker
from shared.envelope import Envelope
from shared.kafka import Publisher
from tests.support import auth, http_client, partitions_of, serve_app, skip_to_end, true_end_offsets

AS_OF = datetime.now(UTC).date()


def health_settings(bootstrap: str, db_url: str, data_dir: Path, **extra: Any) -> HealthSettings:
    values: dict[str, Any] = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "HEALTH_DATABASE_URL": db_url,
        "UPTAKE_DATA_DIR": data_dir,
        "HEALTH_AS_OF": AS_OF,
        "HEALTH_CONSUMER_GROUP": f"health-test-{uuid.uuid4().hex[:8]}",
        "HEALTH_DEBOUNCE_SECONDS": 0.2,
        "HEALTH_RECOMPUTE_INTERVAL": 3600,
        "HEALTH_OUTBOX_INTERVAL": 0.2,
        "HEALTH_ALERT_BUDGET": 1000,
        # backdated test data settles quickly (tests wait on conditions, not on this)
        "HEALTH_SETTLE_SECONDS": 0.3,
        # test clients post outcomes and config in bursts with one admin token; the write
        # limit itself is tested in tests/notify/test_audit.py
        "API_WRITE_BURST": 10_000,
    }
    values.update(extra)
    return HealthSettings(**values)


@dataclass
class Running:
    url: str
    app: FastAPI
    settings: HealthSettings


Send = Callable[[list[Envelope]], Awaitable[None]]


@asynccontextmanager
async def serve_health(
    bootstrap: str, db_url: str, data_dir: Path, **extra: Any
) -> AsyncIterator[Running]:
    """The health service on loopback with the test settings (``extra`` overrides them)."""
    settings = health_settings(bootstrap, db_url, data_dir, **extra)
    app = create_app(settings)
    async with serve_app(app) as url:
        yield Running(url, app, settings)


@pytest.fixture
async def api(
    module_broker: EmbeddedBroker, database_url: Callable[[str], Awaitable[str]], tmp_path: Path
) -> AsyncIterator[Running]:
    """The service on the module's broker, on SQLite and on PostgreSQL in turn, reading only
    the messages sent after it started (modules that stall or stop their broker define their
    own over ``private_broker``)."""
    url = await database_url("health")
    group = f"health-test-{uuid.uuid4().hex[:8]}"
    consumed = list(topics.CONSUMED_BY["health"])
    await skip_to_end(module_broker.bootstrap_servers, group, consumed)  # not earlier tests'
    async with serve_health(
        module_broker.bootstrap_servers, url, tmp_path, HEALTH_CONSUMER_GROUP=group
    ) as running:
        yield running


@asynccontextmanager
async def sender(bootstrap: str, client_id: str) -> AsyncIterator[Send]:
    """A started publisher behind a ``send(envelopes)`` that routes them as ingest does."""
    pub = Publisher(bootstrap, client_id=client_id)
    await pub.start()

    async def _send(envelopes: list[Envelope]) -> None:
        await publish(pub, envelopes)

    try:
        yield _send
    finally:
        await pub.stop()


def client(api: Running, scope: str = "admin") -> httpx.AsyncClient:
    return http_client(base_url=api.url, headers=auth(scope), timeout=30)


async def get_json(api: Running, path: str, **params: Any) -> Any:
    """A read-scope GET that must answer 200; its JSON body."""
    async with client(api, "read") as c:
        r = await c.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def new_account(prefix: str = "acct") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def usage(
    account: str,
    when: datetime,
    *,
    event: str = "Report Created",
    user: str | None = "u1",
    message_id: str | None = None,
    properties: dict[str, Any] | None = None,
) -> Envelope:
    return Envelope(
        type="usage.track",
        occurred_at=when,
        source="ingest",
        account_id=account,
        data={
            "message_id": message_id or uuid.uuid4().hex,
            "kind": "track",
            "event": event,
            "user_id": user,
            "timestamp": when.isoformat(),
            "properties": properties or {},
        },
    )


def account_upsert(account: str, when: datetime, **traits: Any) -> Envelope:
    return Envelope(
        type="account.upserted",
        occurred_at=when,
        source="ingest",
        account_id=account,
        data={"message_id": uuid.uuid4().hex, **traits},
    )


def contact_upsert(account: str, when: datetime, **fields: Any) -> Envelope:
    return Envelope(
        type="contact.upserted",
        occurred_at=when,
        source="ingest",
        account_id=account,
        data={"message_id": uuid.uuid4().hex, **fields},
    )


def day_at(days_ago: int, seconds: int = 0) -> datetime:
    """Noon (UTC) ``days_ago`` days before the as-of day, plus some seconds."""
    day = AS_OF - timedelta(days=days_ago)
    return datetime.combine(day, dtime(12), tzinfo=UTC) + timedelta(seconds=seconds)


def daily_usage(account: str, counts: list[int] | Any) -> list[Envelope]:
    """``counts[i]`` events on day ``len(counts) - i`` before the as-of day; ~n/4 users."""
    out: list[Envelope] = []
    total = len(counts)
    for i, n in enumerate(counts):
        n = int(n)
        users = max(1, (n + 3) // 4)
        for k in range(n):
            out.append(usage(account, day_at(total - i, k), user=f"u{k % users}"))
    return out


async def publish(pub: Publisher, envelopes: list[Envelope]) -> None:
    messages = [
        (
            topics.USAGE_EVENTS if e.type.startswith("usage.") else topics.ACCOUNTS,
            e.key,
            e.to_bytes(),
        )
        for e in envelopes
    ]
    for start in range(0, len(messages), 2000):
        await pub.publish_keyed(messages[start : start + 2000], headers=[])


async def wait_caught_up(bootstrap: str, group: str, timeout: float = 60.0) -> None:
    """Until ``group`` has committed the end offset of every partition of the input topics."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    peek = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    await peek.start()
    try:
        tps = await partitions_of(consumer, (topics.USAGE_EVENTS, topics.ACCOUNTS))
        ends = await true_end_offsets(consumer, tps)
        deadline = time.monotonic() + timeout
        while True:
            behind = [
                tp for tp, end in ends.items() if end and (await peek.committed(tp) or 0) < end
            ]
            if not behind:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"group {group} did not catch up on {behind}")
            await asyncio.sleep(0.1)
    finally:
        await consumer.stop()
        await peek.stop()


async def read_all(bootstrap: str, topic_names: list[str]) -> list[Envelope]:
    """Everything on these topics up to their current end offsets (no waiting for more)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: list[Envelope] = []
    try:
        tps = await partitions_of(consumer, topic_names)
        ends = await true_end_offsets(consumer, tps)
        await consumer.seek_to_beginning(*tps)
        pending = {tp for tp, end in ends.items() if end > 0}
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=500)
            for tp, records in batch.items():
                found += [Envelope.parse(r.value) for r in records]
                if records and records[-1].offset + 1 >= ends[tp]:
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return found


async def until(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 90.0, running: Running | None = None
) -> Any:
    """Poll ``check`` until it returns something truthy (or fail with its last value and,
    given ``running``, what its consumer and scheduler were doing). The bound only matters
    when the condition never holds: beside the whole suite on two cores a rescoring waits
    a while (the scheduler paces live runs by what the last one cost)."""
    started = time.monotonic()
    deadline = started + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            if running is not None and time.monotonic() - started > 10:
                took = time.monotonic() - started
                warnings.warn(f"a wait took {took:.1f}s; health: {describe(running)}", stacklevel=2)
            return last
        await asyncio.sleep(0.1)
    state = f"; health: {describe(running)}" if running is not None else ""
    raise AssertionError(f"condition not met within {timeout}s; last: {last!r}{state}")


def describe(running: Running) -> str:
    """The consumer's and scheduler's state, for a failure message."""
    ctx: HealthContext = running.app.state.health
    runner = running.app.state.consumer
    scheduler = ctx.scheduler
    return (
        f"consumer behind={runner.behind} assigned={runner._membership.assigned} "
        f"fresh={runner._membership.fresh} last_batch_at={runner.last_batch_at}; "
        f"scheduler runs={scheduler.runs} idle={scheduler.idle} "
        f"last_run={scheduler._last_run_seconds:.2f}s live_delay={scheduler.live_delay():.2f}s"
    )


def today() -> date:
    return AS_OF


async def settle(running: Running, *, timeout: float = 60.0) -> None:
    """Until the consumer has committed everything and every touched account is rescored."""
    await wait_caught_up(running.settings.kafka_bootstrap_servers, running.settings.consumer_group)
    ctx: HealthContext = running.app.state.health

    async def quiet() -> bool:
        if not ctx.scheduler.idle:
            return False
        async with ctx.sessions() as session:
            return not await repo.dirty_marks(session, None)

    await until(quiet, timeout=timeout)
