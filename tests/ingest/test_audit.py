"""Ingest's audit trail and write limit leave the tracking firehose alone: events are data,
not actions (their own per-key limit is in test_rate_limit.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from services.ingest.app import create_app
from shared.broker import EmbeddedBroker
from tests.ingest.conftest import ingest_settings
from tests.support import auth, http_client, serve_app


async def test_tracking_calls_are_neither_audited_nor_write_limited(
    broker: EmbeddedBroker, database_url: Callable[[str], Awaitable[str]], tmp_path: Path
) -> None:
    settings = ingest_settings(
        broker.bootstrap_servers,
        await database_url("ingest"),
        tmp_path,
        API_WRITE_RATE=0.01,
        API_WRITE_BURST=1,
    )
    event = {"userId": "u", "event": "E", "groupId": "acct-audit"}
    key = auth("ingest")
    async with serve_app(create_app(settings)) as url, http_client(base_url=url) as c:
        batch = {"batch": [{"type": "track", **event}]}
        for path, body in [("/v1/track", event), ("/v1/batch", batch)] * 2:
            r = await c.post(path, json=body, headers=key)
            assert r.status_code == 200, r.text
        r = await c.get("/v1/audit", headers=auth("admin"))
        assert r.status_code == 200, r.text
        assert r.json()["total"] == 0
        assert (await c.get("/v1/audit", headers=auth("read"))).status_code == 403
