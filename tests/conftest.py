"""Fixtures: the embedded Tansu broker on a free port, PostgreSQL and SQLite databases."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from shared.broker import EmbeddedBroker, free_port
from tests.support import TEST_SECRET

T = TypeVar("T")
PG_ADMIN_DSN = os.environ.get("UPTAKE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")

os.environ.setdefault("UPTAKE_SECRET", TEST_SECRET)
os.environ.setdefault("LOG_JSON", "false")
os.environ.setdefault("LOG_LEVEL", "WARNING")


@pytest.fixture(scope="session")
async def broker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedBroker]:
    """One Tansu broker for the session, topics created (3 partitions to keep it quick)."""
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    b = EmbeddedBroker(port=free_port(), log_path=log)
    await b.start(partitions=3)
    yield b
    b.stop()


@pytest.fixture
async def private_broker(tmp_path: Path) -> AsyncIterator[EmbeddedBroker]:
    """A broker of this test's own, for tests that stall or stop it."""
    b = EmbeddedBroker(port=free_port(), log_path=tmp_path / "tansu.log")
    await b.start(partitions=3)
    yield b
    b.stop()


async def _postgres_reachable() -> str | None:
    try:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=3)
    except (OSError, asyncpg.PostgresError) as exc:
        return f"PostgreSQL not reachable at {PG_ADMIN_DSN}: {exc!r}"
    await conn.close()
    return None


DatabaseFactory = Callable[[str], Awaitable[str]]


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a loop of its own (keeps these fixtures synchronous)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[DatabaseFactory]:
    """Makes fresh PostgreSQL databases (one per call) and drops them all at the end."""
    reason = _run(_postgres_reachable())
    if reason:
        pytest.skip(reason)
    made: list[str] = []

    async def make(service: str) -> str:
        name = f"uptake_{service}_{uuid.uuid4().hex[:10]}"
        await _admin(f'CREATE DATABASE "{name}"')
        made.append(name)
        return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"

    yield make
    for name in made:
        _run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], Awaitable[str]]:
    """``await database_url("health")``: a fresh database on each backend in turn."""
    if request.param == "sqlite":

        async def make_sqlite(service: str) -> str:
            return f"sqlite+aiosqlite:///{tmp_path / f'{service}.db'}"

        return make_sqlite
    factory: DatabaseFactory = request.getfixturevalue("postgres_databases")
    return factory
