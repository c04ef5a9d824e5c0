"""With the broker stalled (SIGSTOP), ingest answers 503 quickly and never 200; it recovers."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx

from services.ingest.app import create_app
from shared import topics
from shared.broker import EmbeddedBroker
from tests.ingest.conftest import ingest_settings, track_body
from tests.support import auth, http_client, read_topic, serve_app


async def test_stalled_broker_gives_503_then_recovers(
    private_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    account = f"stall-{uuid.uuid4().hex[:8]}"
    settings = ingest_settings(
        private_broker.bootstrap_servers,
        f"sqlite+aiosqlite:///{tmp_path / 'i.db'}",
        tmp_path,
        INGEST_PUBLISH_TIMEOUT=1.0,
    )
    async with (
        serve_app(create_app(settings)) as url,
        http_client(base_url=url, headers=auth("ingest"), timeout=10) as client,
    ):

        async def post(n: int) -> httpx.Response:
            return await client.post("/v1/track", json=track_body(account, n))

        assert (await post(0)).status_code == 200
        private_broker.pause()
        try:
            started = time.monotonic()
            stalled = await asyncio.gather(*(post(n) for n in range(1, 6)))
            elapsed = time.monotonic() - started
        finally:
            private_broker.resume()
        assert [r.status_code for r in stalled] == [503] * 5
        assert all(r.headers["Retry-After"] for r in stalled)
        assert elapsed < 5, f"503 took {elapsed:.1f}s"

        deadline = time.monotonic() + 30
        while (r := await post(100)).status_code != 200:
            assert r.status_code == 503
            assert time.monotonic() < deadline, "ingest did not recover after SIGCONT"
            await asyncio.sleep(0.5)
    delivered = await read_topic(
        private_broker.bootstrap_servers,
        topics.USAGE_EVENTS,
        match=lambda e: e.account_id == account,
        count=2,
        settle=1,
    )
    ids = {e.data["message_id"] for e in delivered}
    assert {"m-0", "m-100"} <= ids  # everything answered 200 is there
