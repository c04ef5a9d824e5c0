"""Fixtures: the embedded Tansu broker on a free port, PostgreSQL and SQLite databases."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from shared.broker import EmbeddedBroker, ephemeral_low, free_port
from tests.support import TEST_SECRET

T = TypeVar("T")
PG_ADMIN_DSN = os.environ.get("UPTAKE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")

# Modules whose tests share a slow module-scoped fixture (a broker, a service, a whole
# system): under pytest-xdist (``--dist loadgroup``) each group runs whole on one worker, so
# its fixture starts once, not on every worker that happens to run one of its tests.
SHARED_FIXTURE_GROUPS = {
    "tests/e2e/test_faults.py": "e2e-faults",
    # one whole system for these three (the package-scoped ``running`` in tests/e2e)
    "tests/e2e/test_flow.py": "e2e-system",
    "tests/e2e/test_settled.py": "e2e-system",
    "tests/e2e/test_soak.py": "e2e-system",
    "tests/health/test_api.py": "health-api",
    "tests/health/test_api_edges.py": "health-api-edges",
    "tests/health/test_audit.py": "health-audit",
    "tests/health/test_scenarios.py": "health-scenarios",
    "tests/health/test_settled.py": "health-settled",
    "tests/ingest/test_schemathesis.py": "ingest-fuzz",
    "tests/health/test_schemathesis.py": "health-fuzz",
    "tests/playbooks/test_schemathesis.py": "playbooks-fuzz",
    "tests/notify/test_schemathesis.py": "notify-fuzz",
    "tests/shared/test_revocation.py": "revocation",
    "tests/deploy/": "deploy",
}
# Whole-system runs start first, then the groups, so the longest work begins while the
# quick tests fill the other workers.
HEAVY = ("tests/demo/test_demo_run.py", "tests/e2e/", "tests/console/")


def _group(path: str) -> str | None:
    return next((g for prefix, g in SHARED_FIXTURE_GROUPS.items() if path.startswith(prefix)), None)


# First: xdist's own hook reads the markers into the node ids (``test@group``), which is all
# its scheduler sees; a marker added after that groups nothing (for a while, none did).
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        group = _group(item.nodeid.split("::", 1)[0])
        if group and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(group))

    def rank(item: pytest.Item) -> int:
        if item.nodeid.startswith(HEAVY):
            return 0
        return 1 if item.get_closest_marker("xdist_group") else 2

    def unit(item: pytest.Item) -> str:
        path = item.nodeid.split("::", 1)[0]
        return _group(path) or path

    # a group's modules (and each module's tests) stay together, in collection order: a
    # serial run tears a shared fixture down before the next module starts
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        first.setdefault(unit(item), index)
    items.sort(key=lambda item: (rank(item), first[unit(item)]))


os.environ.setdefault("UPTAKE_SECRET", TEST_SECRET)
os.environ.setdefault("LOG_JSON", "false")
os.environ.setdefault("LOG_LEVEL", "WARNING")


def _worker_ports(worker: str, *, slots: int = 12, width: int = 1000) -> str:
    """Each xdist worker's own range for ``free_port()``: two workers picking at once
    handed out the same port (a service then answered on another's port)."""
    slot = int(worker[2:]) + 1 if worker[:2] == "gw" and worker[2:].isdigit() else 0
    low = ephemeral_low() - slots * width + (slot % slots) * width
    return f"{low}-{low + width}"


os.environ["UPTAKE_FREE_PORTS"] = _worker_ports(os.environ.get("PYTEST_XDIST_WORKER", ""))


@pytest.fixture(scope="session")
async def broker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedBroker]:
    """One Tansu broker for the session, topics created (3 partitions to keep it quick)."""
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    b = EmbeddedBroker(port=free_port(), log_path=log)
    await b.start(partitions=3)
    yield b
    b.stop()


@pytest.fixture(scope="module")
async def module_broker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedBroker]:
    """A broker for one test module: nothing else's backlog in it, so each test's consumer
    group (or a fuzzed service) reads it from offset 0 quickly."""
    b = EmbeddedBroker(port=free_port(), log_path=tmp_path_factory.mktemp("tansu") / "log")
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
    _run(_drop_all(made))


async def _drop_all(names: list[str]) -> None:
    """Dropping a database waits on the disk: a few at a time, not one after another."""
    pool = await asyncpg.create_pool(PG_ADMIN_DSN, min_size=1, max_size=4, timeout=5)
    try:
        await asyncio.gather(
            *(pool.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)') for name in names)
        )
    finally:
        await pool.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], Awaitable[str]]:
    """``await database_url("health")``: a fresh database on each backend in turn."""
    if request.param == "sqlite":

        async def make_sqlite(service: str) -> str:
            return f"sqlite+aiosqlite:///{tmp_path / f'{service}.db'}"

        return make_sqlite
    factory: DatabaseFactory = request.getfixturevalue("postgres_databases")
    return factory


# UPTAKE_TEST_CPU=<file>: each test's CPU seconds (this process and the children it reaped:
# the services and brokers it started), its node id, xdist worker and wall-clock start and
# end, one line per test -- where the suite's time goes on two cores (CPU, and which
# worker is still busy at the end).
_CPU_REPORT = os.environ.get("UPTAKE_TEST_CPU")


def _cpu_seconds() -> float:
    import resource

    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


if _CPU_REPORT:

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> object:
        before, started = _cpu_seconds(), time.time()
        try:
            return (yield)
        finally:
            worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
            with open(_CPU_REPORT, "a") as report:
                report.write(
                    f"{_cpu_seconds() - before:.2f}\t{item.nodeid}\t{worker}"
                    f"\t{started:.1f}\t{time.time():.1f}\n"
                )
