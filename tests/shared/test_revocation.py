"""Revocation everywhere: a token revoked (REST or CLI) is refused by all four services,
and by a replica and a service started after the revocation, within 5 s."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from services.health.app import create_app as create_health
from services.ingest.app import create_app as create_ingest
from services.notify.app import create_app as create_notify
from services.playbooks.app import create_app as create_playbooks
from shared.auth import create_token, verify_token
from shared.broker import EmbeddedBroker
from shared.cli import app as cli
from tests.health.conftest import health_settings
from tests.ingest.conftest import ingest_settings
from tests.notify.conftest import notify_settings
from tests.playbooks.conftest import playbooks_settings
from tests.support import TEST_SECRET, auth, http_client, serve_app

REVOKED_WITHIN = 5.0
# One read-guarded endpoint per service (an admin token holds every scope).
PROBES = {
    "ingest": "/v1/tokens",
    "health": "/v1/accounts",
    "playbooks": "/v1/csms",
    "notify": "/v1/deliveries",
}


@dataclass
class System:
    urls: dict[str, str]
    ingest_db: str
    tmp_path: Path
    bootstrap: str
    stack: contextlib.AsyncExitStack

    async def start(self, name: str) -> str:
        """One more service process-alike (a replica, or a service started later)."""
        data = self.tmp_path / f"{name}-{uuid.uuid4().hex[:6]}"
        if name == "ingest":
            app = create_ingest(ingest_settings(self.bootstrap, self.ingest_db, data))
        elif name == "health":
            app = create_health(health_settings(self.bootstrap, _sqlite(data, name), data))
        elif name == "playbooks":
            app = create_playbooks(playbooks_settings(self.bootstrap, _sqlite(data, name), data))
        else:
            settings = notify_settings(
                self.bootstrap,
                _sqlite(data, name),
                data,
                NOTIFY_CONSUMER_GROUP=f"notify-{uuid.uuid4().hex[:8]}",
            )
            app = create_notify(settings)
        return await self.stack.enter_async_context(serve_app(app))


def _sqlite(data: Path, name: str) -> str:
    data.mkdir(parents=True, exist_ok=True)
    return f"sqlite+aiosqlite:///{data / f'{name}.db'}"


@pytest.fixture
async def system(
    module_broker: EmbeddedBroker,
    database_url: Callable[[str], Awaitable[str]],
    tmp_path: Path,
) -> AsyncIterator[System]:
    """The four services (ingest, the registry's home, on SQLite and PostgreSQL in turn)."""
    async with contextlib.AsyncExitStack() as stack:
        # the module's own broker: the services' consumers start on this module's topics,
        # not the whole session's backlog (which loaded the loop past request timeouts)
        bootstrap = module_broker.bootstrap_servers
        s = System({}, await database_url("ingest"), tmp_path, bootstrap, stack)
        for name in PROBES:
            s.urls[name] = await s.start(name)
        yield s


def probe(name: str) -> str:
    return PROBES[name.split("-")[0]]  # "ingest-replica" -> ingest's


async def _status(client: httpx.AsyncClient, url: str, token: str) -> httpx.Response:
    return await client.get(url, headers={"Authorization": f"Bearer {token}"})


async def _track(base: str, write_key: str) -> httpx.Response:
    """The tracking fast lane checks write keys its own way (key in the body here)."""
    event = {"userId": "u", "event": "e", "groupId": "acct-revoke", "writeKey": write_key}
    async with http_client(timeout=30) as client:
        return await client.post(f"{base}/v1/track", json=event)


async def assert_accepted_everywhere(urls: dict[str, str], token: str) -> None:
    async with http_client(timeout=30) as client:
        for name, base in urls.items():
            r = await _status(client, base + probe(name), token)
            assert r.status_code == 200, (name, r.text)


async def assert_refused_within(urls: dict[str, str], token: str, *, since: float) -> None:
    """Each service answers 401 "token revoked" no later than 5 s after ``since``."""

    async def refused(client: httpx.AsyncClient, name: str, base: str) -> float:
        while True:
            r = await _status(client, base + probe(name), token)
            if r.status_code == 401:
                assert r.json()["detail"] == "token revoked", (name, r.text)
                return time.monotonic() - since
            assert r.status_code == 200, (name, r.text)
            assert time.monotonic() - since < REVOKED_WITHIN, f"{name} still accepts it"
            await asyncio.sleep(0.05)

    async with http_client(timeout=30) as client:
        took = await asyncio.gather(*(refused(client, n, u) for n, u in urls.items()))
    assert max(took) < REVOKED_WITHIN, dict(zip(urls, took, strict=True))


async def test_rest_revocation_reaches_every_service_and_later_ones(system: System) -> None:
    async with http_client(base_url=system.urls["ingest"], headers=auth("admin"), timeout=30) as c:
        r = await c.post("/v1/tokens", json={"scopes": ["admin"], "subject": "to-revoke"})
        assert r.status_code == 201, r.text
        token, token_id = r.json()["token"], r.json()["id"]
        replica = await system.start("ingest")  # a second ingest replica, same registry
        urls = {**system.urls, "ingest-replica": replica}
        await assert_accepted_everywhere(urls, token)
        assert (await _track(replica, token)).status_code == 200

        r = await c.post(f"/v1/tokens/{token_id}/revoke")
        since = time.monotonic()
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "revoked" and r.json()["known"] is True
        await assert_refused_within(urls, token, since=since)
        r = await _track(replica, token)
        assert (r.status_code, r.json()["detail"]) == (401, "token revoked")

    # A service (and an ingest replica) started after the revocation refuses it at once.
    later = {"health": await system.start("health"), "ingest": await system.start("ingest")}
    async with http_client(timeout=30) as client:
        for name, base in later.items():
            r = await _status(client, base + probe(name), token)
            assert (r.status_code, r.json()["detail"]) == (401, "token revoked"), name


def _cli(system: System, *args: str) -> str:
    env = {
        "UPTAKE_SECRET": TEST_SECRET,
        "INGEST_DATABASE_URL": system.ingest_db,
        "UPTAKE_DATA_DIR": str(system.tmp_path),
        "KAFKA_BOOTSTRAP_SERVERS": system.bootstrap,
    }
    result = CliRunner().invoke(cli, ["token", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


async def test_cli_revocation_reaches_every_service(system: System) -> None:
    token = await asyncio.to_thread(_cli, system, "create", "--scope", "admin", "--subject", "ops")
    await assert_accepted_everywhere(system.urls, token)
    token_id = verify_token(TEST_SECRET, token).token_id
    listing = await asyncio.to_thread(_cli, system, "list", "--plain")
    # (other tests' tokens may be listed too: every service's uses reach the registry)
    [line] = [row for row in listing.splitlines() if row.startswith(f"{token_id}\t")]
    assert "\tops\t" in line

    started = time.monotonic()
    out = await asyncio.to_thread(_cli, system, "revoke", token_id)
    assert f"token {token_id} revoked at " in out
    await assert_refused_within(system.urls, token, since=started)
    listing = await asyncio.to_thread(_cli, system, "list", "--plain")
    [line] = [row for row in listing.splitlines() if row.startswith(token_id)]
    assert "\trevoked " in line


async def test_a_token_unknown_to_the_registry_can_be_revoked_by_id(system: System) -> None:
    """Tokens made before the registry (no row, no key id) stay valid until revoked by id."""
    import jwt

    legacy_id = uuid.uuid4().hex
    legacy = jwt.encode(
        {"sub": "old-tool", "scopes": ["admin"], "iat": int(time.time()), "jti": legacy_id},
        TEST_SECRET,
        algorithm="HS256",
    )
    await assert_accepted_everywhere(system.urls, legacy)
    started = time.monotonic()
    async with http_client(base_url=system.urls["ingest"], headers=auth("admin"), timeout=30) as c:
        r = await c.post(f"/v1/tokens/{legacy_id}/revoke")
    assert r.status_code == 200, r.text
    await assert_refused_within(system.urls, legacy, since=started)


async def test_tokens_used_only_on_other_services_show_their_last_use_in_the_registry(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry is ingest's; health, playbooks and notify send their uses on
    auth.token-uses.v1 (here every 0.2 s, by default every 10 s)."""
    monkeypatch.setenv("TOKEN_USAGE_REPORT_INTERVAL", "0.2")
    monkeypatch.setenv("INGEST_TOKEN_USAGE_FLUSH_INTERVAL", "0.2")
    health, playbooks = await system.start("health"), await system.start("playbooks")
    ingest = await system.start("ingest")  # reads the topic whole, from the start
    admin = {"Authorization": f"Bearer {create_token(TEST_SECRET, scopes=['admin'])}"}
    outside = create_token(TEST_SECRET, scopes=["read"], subject="script@example.com")
    outside_id = verify_token(TEST_SECRET, outside).token_id
    async with http_client(timeout=30) as c:
        r = await c.post(
            f"{ingest}/v1/tokens", json={"scopes": ["read"], "subject": "csm@x.test"}, headers=admin
        )
        assert r.status_code == 201, r.text
        made = r.json()
        assert made["last_used_at"] is None
        before = datetime.now(UTC)
        assert (await _status(c, f"{health}/v1/accounts", made["token"])).status_code == 200
        assert (await _status(c, f"{playbooks}/v1/csms", outside)).status_code == 200

        async def registry() -> dict[str, dict[str, Any]]:
            r = await c.get(f"{ingest}/v1/tokens", headers=admin)
            assert r.status_code == 200, r.text
            return {t["id"]: t for t in r.json()["items"]}

        deadline = time.monotonic() + 30
        while True:
            rows = await registry()
            if rows[made["id"]]["last_used_at"] and outside_id in rows:
                break
            assert time.monotonic() < deadline, rows.get(made["id"])
            await asyncio.sleep(0.2)
    used = datetime.fromisoformat(rows[made["id"]]["last_used_at"])
    assert before - timedelta(seconds=1) <= used <= datetime.now(UTC)
    seen = rows[outside_id]
    assert seen["origin"] == "seen" and seen["subject"] == "script@example.com"
    assert seen["scopes"] == ["read"] and seen["last_used_at"]
