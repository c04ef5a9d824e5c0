"""With the account database gone or stuck, ingest answers 503 + Retry-After, never 200/500."""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path

import asyncpg
import httpx

from services.ingest.app import create_app
from shared.broker import EmbeddedBroker
from tests.conftest import PG_ADMIN_DSN, DatabaseFactory
from tests.ingest.conftest import ingest_settings
from tests.support import auth, http_client, serve_app


def assert_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert r.headers.get("Retry-After", "").isdigit(), r.headers
    assert "database unavailable" in r.json()["detail"], r.text


async def test_dropped_postgres_database_gives_503(
    broker: EmbeddedBroker, postgres_databases: DatabaseFactory, tmp_path: Path
) -> None:
    url = await postgres_databases("ingest")
    name = url.rsplit("/", 1)[1]
    account, user = f"acct-{uuid.uuid4().hex[:8]}", f"u-{uuid.uuid4().hex[:8]}"
    settings = ingest_settings(broker.bootstrap_servers, url, tmp_path)
    async with (
        serve_app(create_app(settings)) as base,
        http_client(base_url=base, headers=auth("ingest"), timeout=30) as client,
    ):
        linked = await client.post("/v1/group", json={"userId": user, "groupId": account})
        assert linked.status_code == 200, linked.text
        admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
        try:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            await admin.close()

        started = time.monotonic()
        lookup = await client.post("/v1/track", json={"userId": "stranger", "event": "E"})
        store = await client.post("/v1/group", json={"userId": "other", "groupId": account})
        batch = await client.post(
            "/v1/batch",
            json={
                "batch": [
                    {"type": "track", "userId": "stranger", "event": "E"},
                    {"type": "track", "userId": "u", "event": "E", "groupId": account},
                ]
            },
        )
        elapsed = time.monotonic() - started
        # needing no lookup (groupId given, or the user in the cache) still works
        direct = await client.post(
            "/v1/track", json={"userId": "u", "event": "E", "groupId": account}
        )
        cached = await client.post("/v1/track", json={"userId": user, "event": "E"})
    for r in (lookup, store, batch):
        assert_unavailable(r)
    assert elapsed < 15, elapsed
    assert direct.status_code == 200 and cached.status_code == 200, (direct.text, cached.text)


async def test_locked_sqlite_database_gives_503_then_recovers(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    path = tmp_path / "ingest.db"
    settings = ingest_settings(
        broker.bootstrap_servers,
        f"sqlite+aiosqlite:///{path}",
        tmp_path,
        INGEST_DATABASE_TIMEOUT=1.0,
    )
    account = f"acct-{uuid.uuid4().hex[:8]}"
    async with (
        serve_app(create_app(settings)) as base,
        http_client(base_url=base, headers=auth("ingest"), timeout=30) as client,
    ):
        # the app's own start-up writes (audit prune, token upkeep) may hold the lock a moment
        locker = sqlite3.connect(path, isolation_level=None, timeout=30)
        try:
            locker.execute("BEGIN EXCLUSIVE")  # another writer holds the database
            started = time.monotonic()
            stuck = await client.post("/v1/group", json={"userId": "u", "groupId": account})
            elapsed = time.monotonic() - started
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert_unavailable(stuck)
        assert elapsed < 5, elapsed
        deadline = time.monotonic() + 40
        while True:  # the driver's own wait on the lock ends; then writes go through again
            again = await client.post("/v1/group", json={"userId": "u", "groupId": account})
            if again.status_code == 200 or time.monotonic() > deadline:
                break
            assert_unavailable(again)
        assert again.status_code == 200, again.text
        found = await client.post("/v1/track", json={"userId": "u", "event": "E"})
        assert found.status_code == 200, found.text
