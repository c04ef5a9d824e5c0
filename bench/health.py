"""Health benchmarks: ``.venv/bin/python -m bench.health [--events N] [--accounts N]``.

1. Recompute 10,000 accounts x 90 days x 4 metrics: the vectorised scoring + every
   default rule + components (pure), then the same through the database (PostgreSQL:
   load the cube, score, store scores/history, reconcile alerts, one transaction).
2. Consumer throughput: usage events from a topic to stored PostgreSQL rollups (the
   real ConsumerRunner + HealthConsumer), next to a bare aiokafka consumer reading the
   same topic in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.health import repository as repo
from services.health.app import settle_heap
from services.health.config import MetricDef, MetricsConfig, load_default_rules
from services.health.configstore import ConfigStore
from services.health.consumer import HealthConsumer
from services.health.decode import decode
from services.health.eventnames import EventNames
from services.health.models import Rollup
from services.health.recompute import Recomputer, components_of
from services.health.rules import evaluate
from services.health.settings import DEFAULT_CONFIG, HealthSettings
from services.health.snapshot import NEVER, Cube, snapshot_at
from shared import topics
from shared.broker import EmbeddedBroker, free_port
from shared.db import create_engine, create_sessionmaker
from shared.kafka import ConsumerRunner, Publisher
from shared.migrations import upgrade_async

PG_ADMIN = os.environ.get("UPTAKE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
METRICS = MetricsConfig(
    metrics=[
        MetricDef(key="events", kind="count"),
        MetricDef(key="active_users", kind="distinct_users"),
        MetricDef(key="reports", kind="count", events=["Report Created"]),
        MetricDef(key="rows", kind="sum", property="rows"),
    ]
)
AS_OF = date(2026, 11, 23)
DEFAULT_BATCH = HealthSettings.model_fields["consumer_batch"].default
BATCH = int(os.environ.get("HEALTH_CONSUMER_BATCH", DEFAULT_BATCH))
EVENT_CAP = HealthSettings.model_fields["max_event_metrics"].default
# BENCH_NO_EVENT_METRICS=1: the consumer without per-event rollups (as before they existed)
BARE_EVENTS = os.environ.get("BENCH_NO_EVENT_METRICS") == "1"


def synthetic(accounts: int, days: int, seed: int = 7) -> np.ndarray:
    """Daily values with a level per account, weekly seasonality, some drops and silences."""
    rng = np.random.default_rng(seed)
    level = rng.lognormal(2.5, 1.0, size=(accounts, 4, 1))
    week = 1 + 0.3 * np.sin(np.arange(days) * 2 * np.pi / 7)[None, None, :]
    values = rng.poisson(level * week).astype(np.float64)
    drop = rng.random(accounts) < 0.1
    values[drop, :, -5:] *= 0.2
    values[rng.random(accounts) < 0.05, :, -20:] = 0
    return values


def cube_of(values: np.ndarray) -> Cube:
    n = values.shape[0]
    rng = np.random.default_rng(1)
    return Cube(
        account_ids=[f"a{i:05d}" for i in range(n)],
        metric_keys=METRICS.keys,
        metric_names=[m.name for m in METRICS.metrics],
        weights=np.ones(4),
        values=values,
        first_day=AS_OF - timedelta(days=values.shape[2]),
        first_seen=np.zeros(n, dtype=np.int64),
        last_active=np.full(n, NEVER),
        segments=rng.integers(0, 5, n),
        stage=[None] * n,
        plan=[None] * n,
        renewal=np.full(n, np.nan),
    )


def bench_pure(accounts: int, days: int) -> float:
    cube = cube_of(synthetic(accounts, days))
    rules = load_default_rules(DEFAULT_CONFIG)
    started = time.perf_counter()
    snap = snapshot_at(cube, days, METRICS.scoring)
    hits = sum(len(evaluate(r.type, r.params, snap)) for r in rules)
    for a in range(accounts):
        components_of(snap.now, a, METRICS)
    elapsed = time.perf_counter() - started
    bands = np.bincount(snap.now.band, minlength=3)
    print(
        f"recompute (pure): {accounts:,} accounts x {days} days x 4 metrics in {elapsed:.2f} s "
        f"= {accounts / elapsed:,.0f} accounts/s  (red/yellow/green {bands.tolist()}, "
        f"{hits:,} rule hits)"
    )
    return elapsed


async def _new_database() -> str:
    name = f"uptake_bench_health_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(PG_ADMIN)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    return name


async def _drop_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


def _pg_url(name: str) -> str:
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{name}"


async def bench_db_recompute(accounts: int, days: int) -> None:
    name = await _new_database()
    url = _pg_url(name)
    try:
        await upgrade_async("health", url)
        values = synthetic(accounts, days)
        first = AS_OF - timedelta(days=days)
        conn = await asyncpg.connect(PG_ADMIN.rsplit("/", 1)[0] + f"/{name}")
        now = datetime.now(UTC)
        await conn.copy_records_to_table(
            "accounts",
            records=[(f"a{i:05d}", "{}", first, now, now) for i in range(accounts)],
            columns=["account_id", "traits", "first_seen", "created_at", "updated_at"],
        )
        a, m, d = np.nonzero(values)
        keys = METRICS.keys
        await conn.copy_records_to_table(
            "rollups",
            records=(
                (
                    f"a{a[i]:05d}",
                    keys[m[i]],
                    first + timedelta(days=int(d[i])),
                    float(values[a[i], m[i], d[i]]),
                )
                for i in range(len(a))
            ),
            columns=["account_id", "metric", "day", "value"],
        )
        await conn.close()
        engine = create_engine(url)
        sessions = create_sessionmaker(engine)
        store = ConfigStore(sessions, default_metrics=METRICS, default_budget=20)
        await store.seed_rules(load_default_rules(DEFAULT_CONFIG))
        recomputer = Recomputer(sessions, store, today=lambda: AS_OF)
        started = time.perf_counter()
        result = await recomputer.recompute(None)
        elapsed = time.perf_counter() - started
        print(
            f"recompute (PostgreSQL, load+score+store+alerts): {result.accounts:,} accounts "
            f"({len(a):,} rollup rows stored) in {elapsed:.2f} s = "
            f"{result.accounts / elapsed:,.0f} accounts/s; alerts {result.alerts}"
        )
        await engine.dispose()
    finally:
        await _drop_database(name)


def _events(n: int, accounts: int) -> list[tuple[str, bytes, bytes]]:
    rng = np.random.default_rng(3)
    acc = rng.integers(0, accounts, n)
    day = rng.integers(0, 3, n)  # live traffic: today and the two days before
    out = []
    base = datetime.combine(AS_OF, datetime.min.time(), tzinfo=UTC)
    for i in range(n):
        account = f"acct-{acc[i]:05d}"
        ts = (base - timedelta(days=int(day[i]), seconds=i % 86400)).isoformat()
        env = {
            "id": uuid.uuid4().hex,
            "type": "usage.track",
            "version": 1,
            "occurred_at": ts,
            "produced_at": ts,
            "source": "ingest",
            "account_id": account,
            "data": {
                "message_id": uuid.uuid4().hex,
                "kind": "track",
                "event": "Report Created" if i % 3 == 0 else "Page Viewed",
                "user_id": f"u{i % 50}",
                "timestamp": ts,
                "properties": {"rows": i % 7},
                "context": {},
            },
            "trace_id": uuid.uuid4().hex,
        }
        out.append((topics.USAGE_EVENTS, account.encode(), orjson.dumps(env)))
    return out


async def _bare_rate(bootstrap: str, n: int) -> float:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_poll_records=2000
    )
    await consumer.start()
    parts = await consumer._client._wait_on_metadata(topics.USAGE_EVENTS)
    tps = [TopicPartition(topics.USAGE_EVENTS, p) for p in parts]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    seen = 0
    started = time.perf_counter()
    while seen < n:
        batch = await consumer.getmany(timeout_ms=500, max_records=2000)
        seen += sum(len(v) for v in batch.values())
    elapsed = time.perf_counter() - started
    await consumer.stop()
    return n / elapsed


async def _health_rate(bootstrap: str, n: int) -> tuple[float, float]:
    """(events/s once the group has joined and stored its first batch, total seconds)."""
    name = await _new_database()
    url = _pg_url(name)
    try:
        await upgrade_async("health", url)
        engine = create_engine(url)
        sessions = create_sessionmaker(engine)
        publisher = Publisher(bootstrap, client_id="bench")
        await publisher.start()

        async def metrics() -> MetricsConfig:
            return METRICS

        consumer = HealthConsumer(
            sessions,
            metrics=metrics,
            on_stored=lambda live: None,
            today=lambda: AS_OF,
            event_names=None if BARE_EVENTS else EventNames(sessions, cap=EVENT_CAP),
        )
        runner = ConsumerRunner(
            bootstrap_servers=bootstrap,
            group_id=f"bench-{uuid.uuid4().hex[:6]}",
            topics=[topics.USAGE_EVENTS],
            handler=consumer.handle,
            publisher=publisher,
            max_batch=BATCH,
            decode=decode,
        )
        settle_heap()  # as the service does once started
        started = time.perf_counter()
        await runner.start()
        first: tuple[float, int] | None = None
        while True:
            async with sessions() as session:
                stored = len(await repo.dirty_marks(session, None))
                seen = await session.scalar(_count_seen()) or 0
            if first is None and seen:
                first = (time.perf_counter(), seen)  # the group has joined; a batch is stored
            if seen >= n:
                break
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
        assert first is not None
        steady = (n - first[1]) / (time.perf_counter() - first[0])
        await runner.stop()
        await publisher.stop()
        async with sessions() as session:
            total = await session.scalar(_sum_events())
        await engine.dispose()
        assert stored > 0 and total == n, (stored, total)
        return steady, elapsed
    finally:
        await _drop_database(name)


def _count_seen() -> Any:
    from sqlalchemy import func, select

    from services.health.models import SeenMessage

    return select(func.count()).select_from(SeenMessage)


def _sum_events() -> Any:
    from sqlalchemy import func, select

    return select(func.sum(Rollup.value)).where(Rollup.metric == "events")


async def bench_consumer(n: int, accounts: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        broker = EmbeddedBroker(port=free_port(), log_path=Path(tmp) / "tansu.log")
        await broker.start(partitions=3)
        try:
            pub = Publisher(broker.bootstrap_servers, client_id="bench-load")
            await pub.start()
            messages = _events(n, accounts)
            for start in range(0, n, 5000):
                await pub.publish_keyed(messages[start : start + 5000], headers=[])
            await pub.stop()
            bare = await _bare_rate(broker.bootstrap_servers, n)
            rate, elapsed = await _health_rate(broker.bootstrap_servers, n)
        finally:
            broker.stop()
    print(f"consumer (bare aiokafka, no decoding): {bare:,.0f} events/s")
    print(
        f"consumer (health -> PostgreSQL rollups, 4 metrics"
        f"{'' if BARE_EVENTS else ' + per-event counts and users of 2 event names'}, "
        f"dedupe; 1,000 accounts x 3 days; "
        f"batches of {BATCH:,}): "
        f"{n:,} events in {elapsed:.2f} s including the group join; "
        f"{rate:,.0f} events/s once joined ({rate / bare:.1%} of bare)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--skip-db", action="store_true", help="pure recompute only")
    args = parser.parse_args()
    bench_pure(args.accounts, args.days)
    if args.skip_db:
        return
    asyncio.run(bench_db_recompute(args.accounts, args.days))
    asyncio.run(bench_consumer(args.events, 1000))


if __name__ == "__main__":
    main()
