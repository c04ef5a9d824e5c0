"""``/v1/tokens``: the registry (created, expires, last used), default expiries, no
escalation, expired tokens named, and secret rotation with ``UPTAKE_SECRET_PREVIOUS``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import text

from services.ingest.app import create_app
from shared.auth import create_token, issue_token, key_id
from shared.broker import EmbeddedBroker
from shared.db import create_engine
from tests.ingest.conftest import ingest_settings
from tests.support import TEST_SECRET, auth, http_client, serve_app

OLD_SECRET = "old-secret-0123456789abcdef-0123456789"
DAY = timedelta(days=1)


@asynccontextmanager
async def running_ingest(
    broker: EmbeddedBroker, db_url: str, tmp_path: Path, **extra: object
) -> AsyncIterator[str]:
    settings = ingest_settings(
        broker.bootstrap_servers,
        db_url,
        tmp_path,
        INGEST_TOKEN_USAGE_FLUSH_INTERVAL=0.1,
        **extra,
    )
    async with serve_app(create_app(settings)) as url:
        yield url


@pytest.fixture
async def db_url(database_url: Callable[[str], Awaitable[str]]) -> str:
    return await database_url("ingest")


@pytest.fixture
async def admin(
    broker: EmbeddedBroker, db_url: str, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        running_ingest(broker, db_url, tmp_path) as url,
        http_client(base_url=url, headers=auth("admin"), timeout=10) as client,
    ):
        yield client


def ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


async def create(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    r = await client.post("/v1/tokens", json=body)
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


async def listed(client: httpx.AsyncClient, token_id: str) -> dict[str, Any]:
    r = await client.get("/v1/tokens")
    assert r.status_code == 200, r.text
    [item] = [t for t in r.json()["items"] if t["id"] == token_id]
    assert "token" not in item
    return item  # type: ignore[no-any-return]


async def test_create_sets_default_expiry_per_scope_and_list_shows_it(
    admin: httpx.AsyncClient, db_url: str
) -> None:
    made = {
        "read": await create(admin, scopes=["read"], subject="dashboards"),
        "write": await create(admin, scopes=["write"]),
        "admin": await create(admin, scopes=["admin"]),
        "ingest": await create(admin, scopes=["ingest"], subject="web-sdk"),
        "mixed": await create(admin, scopes=["ingest", "read"]),
        "short": await create(admin, scopes=["read"], ttl="12h"),
        "never": await create(admin, scopes=["admin"], ttl="never"),
        "key": await create(admin, scopes=["ingest"], ttl="30d"),
    }
    for name in ("read", "write", "admin", "mixed"):
        item = made[name]
        assert ts(item["expires_at"]) - ts(item["created_at"]) == 90 * DAY, name  # type: ignore[operator]
    for name in ("ingest", "never"):
        assert made[name]["expires_at"] is None, name
    assert ts(made["short"]["expires_at"]) - ts(made["short"]["created_at"]) == timedelta(hours=12)  # type: ignore[operator]
    assert ts(made["key"]["expires_at"]) - ts(made["key"]["created_at"]) == 30 * DAY  # type: ignore[operator]

    item = await listed(admin, made["read"]["id"])
    assert item["subject"] == "dashboards" and item["scopes"] == ["read"]
    assert item["status"] == "active" and item["origin"] == "api"
    assert item["created_at"] == made["read"]["created_at"]
    assert item["expires_at"] == made["read"]["expires_at"]
    assert item["last_used_at"] is None and item["revoked_at"] is None
    assert item["created_by"] == "tests"
    # The token string is returned once and stored nowhere.
    claims = jwt.decode(made["read"]["token"], TEST_SECRET, algorithms=["HS256"])
    assert claims["jti"] == made["read"]["id"]
    assert jwt.get_unverified_header(made["read"]["token"])["kid"] == item["key_id"]
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT * FROM api_tokens"))).all()
    finally:
        await engine.dispose()
    stored = " ".join(str(v) for row in rows for v in row)
    assert all(t["token"] not in stored for t in made.values())
    assert made["read"]["token"].split(".")[2] not in stored


async def test_a_token_cannot_mint_a_wider_token(admin: httpx.AsyncClient) -> None:
    write = (await create(admin, scopes=["write"]))["token"]
    r = await admin.post(
        "/v1/tokens", json={"scopes": ["admin"]}, headers={"Authorization": f"Bearer {write}"}
    )
    assert r.status_code == 403
    assert "'admin'" in r.json()["detail"]
    ingest_key = (await create(admin, scopes=["ingest"]))["token"]
    r = await admin.post(
        "/v1/tokens", json={"scopes": ["read"]}, headers={"Authorization": f"Bearer {ingest_key}"}
    )
    assert r.status_code == 403 and "'admin'" in r.json()["detail"]
    r = await admin.get("/v1/tokens", headers={"Authorization": f"Bearer {write}"})
    assert r.status_code == 403


async def test_bad_input_is_a_422_naming_the_field(admin: httpx.AsyncClient) -> None:
    for body, field in (
        ({"scopes": ["root"]}, "scopes"),
        ({"scopes": []}, "scopes"),
        ({"scopes": ["read"], "ttl": "forever"}, "ttl"),
        ({"scopes": ["read"], "ttl": "0d"}, "ttl"),
        ({"scopes": ["read"], "subject": ""}, "subject"),
        ({"scopes": ["read"], "owner": "x"}, "owner"),
    ):
        r = await admin.post("/v1/tokens", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["detail"][0]["loc"][:2] == ["body", field], r.text
    r = await admin.post("/v1/tokens/not%20an%20id/revoke")
    assert r.status_code == 422


async def test_expired_token_is_refused_naming_the_expiry(admin: httpx.AsyncClient) -> None:
    issued_at = time.time() - 2 * 86400
    expired = issue_token(TEST_SECRET, scopes=["admin"], ttl_seconds=86400, now=issued_at)
    expiry = datetime.fromtimestamp(int(issued_at) + 86400, UTC)
    detail = f"token expired at {expiry.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    headers = {"Authorization": f"Bearer {expired.token}"}
    r = await admin.get("/v1/tokens", headers=headers)
    assert (r.status_code, r.json()["detail"]) == (401, detail)
    r = await admin.post("/v1/track", json={"userId": "u", "event": "e"}, headers=headers)
    assert (r.status_code, r.json()["detail"]) == (401, detail)


async def test_last_used_is_recorded_at_most_once_a_minute(admin: httpx.AsyncClient) -> None:
    first = await create(admin, scopes=["ingest"], subject="sdk-a")
    event = {"userId": "u", "event": "Report Created", "groupId": "acct-last-used"}

    async def track(token: str) -> None:
        r = await admin.post("/v1/track", json=event, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text

    async def last_used(token_id: str) -> str:
        deadline = time.monotonic() + 10
        while (value := (await listed(admin, token_id))["last_used_at"]) is None:
            assert time.monotonic() < deadline, "last use never recorded"
            await asyncio.sleep(0.1)
        return str(value)

    before = time.time()
    await track(first["token"])
    used = await last_used(first["id"])
    assert before - 1 <= datetime.fromisoformat(used).timestamp() <= time.time()
    for _ in range(5):
        await track(first["token"])
    # A flush happened after those uses (another token's first use is in it)...
    second = await create(admin, scopes=["ingest"], subject="sdk-b")
    await track(second["token"])
    await last_used(second["id"])
    # ...and the first token's last use did not move: noted at most once a minute.
    assert (await listed(admin, first["id"]))["last_used_at"] == used


async def test_tokens_made_outside_the_registry_are_listed_once_used(
    admin: httpx.AsyncClient,
) -> None:
    """``create_token`` in code (and tokens made before the registry) get a row on first use."""
    token = create_token(TEST_SECRET, scopes=["ingest"], subject="old-sdk")
    claims = jwt.decode(token, TEST_SECRET, algorithms=["HS256"])
    r = await admin.post(
        "/v1/track",
        json={"userId": "u", "event": "e", "groupId": "acct-seen"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200
    deadline = time.monotonic() + 60  # a bound for a loaded machine, not a speed claim
    while True:
        items = (await admin.get("/v1/tokens")).json()["items"]
        seen = [t for t in items if t["id"] == claims["jti"]]
        if seen:
            break
        assert time.monotonic() < deadline, "the token's first use never reached the registry"
        await asyncio.sleep(0.1)
    assert seen[0]["origin"] == "seen" and seen[0]["subject"] == "old-sdk"
    assert seen[0]["scopes"] == ["ingest"] and seen[0]["last_used_at"] is not None


async def test_rotation_accepts_the_previous_secret_until_it_is_removed(
    broker: EmbeddedBroker, db_url: str, tmp_path: Path
) -> None:
    # Tokens of before the rotation: signed by the old secret, with and without a key id.
    old = create_token(OLD_SECRET, scopes=["admin"], subject="before")
    legacy = jwt.encode(
        {"sub": "older", "scopes": ["ingest"], "jti": "legacy-1"}, OLD_SECRET, algorithm="HS256"
    )
    event = {"userId": "u", "event": "e", "groupId": "acct-rotation"}

    async def answers(url: str, token: str) -> tuple[int, int]:
        headers = {"Authorization": f"Bearer {token}"}
        async with http_client(base_url=url, headers=headers, timeout=10) as client:
            listing = (await client.get("/v1/tokens")).status_code
            tracked = (await client.post("/v1/track", json=event)).status_code
        return listing, tracked

    rotating = {"UPTAKE_SECRET": TEST_SECRET, "UPTAKE_SECRET_PREVIOUS": OLD_SECRET}
    async with running_ingest(broker, db_url, tmp_path, **rotating) as url:
        assert await answers(url, old) == (200, 200)
        assert (await answers(url, legacy))[1] == 200
        async with http_client(base_url=url, headers={"Authorization": f"Bearer {old}"}) as c:
            r = await c.post("/v1/tokens", json={"scopes": ["admin"], "subject": "re-issued"})
        assert r.status_code == 201
        reissued = r.json()["token"]
        assert jwt.get_unverified_header(reissued)["kid"] == key_id(TEST_SECRET)
        assert r.json()["key_id"] == key_id(TEST_SECRET)

    async with running_ingest(broker, db_url, tmp_path, UPTAKE_SECRET=TEST_SECRET) as url:
        assert await answers(url, old) == (401, 401)
        assert (await answers(url, legacy))[1] == 401
        assert await answers(url, reissued) == (200, 200)
        async with http_client(base_url=url) as client:
            r = await client.get("/v1/tokens", headers={"Authorization": f"Bearer {old}"})
        assert "no longer accepted" in r.json()["detail"]


async def test_token_creation_and_revocation_are_audited_without_the_token(
    admin: httpx.AsyncClient,
) -> None:
    r = await admin.post("/v1/tokens", json={"scopes": ["write"], "subject": "csm@example.com"})
    assert r.status_code == 201, r.text
    created = r.json()
    r = await admin.post(f"/v1/tokens/{created['id']}/revoke")
    assert r.status_code == 200, r.text
    r = await admin.get("/v1/audit")
    assert r.status_code == 200, r.text
    rows = r.json()["items"]
    assert [(i["action"], i["status"], i["target"]) for i in rows] == [
        ("revoke_token", 200, created["id"]),
        ("create_token", 201, created["id"]),
    ], rows
    assert all(i["subject"] == "tests" for i in rows)
    assert rows[1]["summary"]["body"]["scopes"] == ["write"]
    raw = repr(rows)
    assert created["token"] not in raw
    assert created["token"].split(".")[2] not in raw  # not even the signature
    assert admin.headers["authorization"].split()[1] not in raw
