"""Ingest drains before a stop: tracking calls get 503 + Retry-After, ``/readyz`` says
``draining``, and ``drained`` only once every call in hand has answered (its events
acknowledged by the broker)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from pathlib import Path

import httpx

from services.ingest.app import create_app
from shared import topics
from shared.broker import EmbeddedBroker
from tests.ingest.conftest import ingest_settings, track_body
from tests.support import TEST_SECRET, auth, http_client, read_topic, serve_app, service_process


async def _ready(client: httpx.AsyncClient) -> tuple[int, dict[str, object]]:
    response = await client.get("/readyz")
    return response.status_code, response.json()


async def test_draining_refuses_new_calls_and_waits_for_those_in_hand(
    private_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    account = f"drain-{uuid.uuid4().hex[:8]}"
    settings = ingest_settings(
        private_broker.bootstrap_servers,
        f"sqlite+aiosqlite:///{tmp_path / 'i.db'}",
        tmp_path,
        INGEST_PUBLISH_TIMEOUT=30.0,
        UPTAKE_SECRET=TEST_SECRET,
    )
    app = create_app(settings)
    async with (
        serve_app(app) as url,
        http_client(base_url=url, headers=auth("ingest"), timeout=40) as client,
    ):
        assert (await client.post("/v1/track", json=track_body(account, 0))).status_code == 200
        assert (await _ready(client))[1]["status"] == "ok"
        private_broker.pause()  # the next call waits for its acknowledgement
        try:
            in_hand = asyncio.create_task(client.post("/v1/track", json=track_body(account, 1)))
            deadline = time.monotonic() + 10
            while app.state.intake.in_hand == 0:
                assert time.monotonic() < deadline, "the call never reached ingest"
                await asyncio.sleep(0.01)
            app.state.runtime.start_draining()

            refused = await client.post("/v1/track", json=track_body(account, 2))
            assert refused.status_code == 503
            assert refused.headers["Retry-After"] == "10"
            assert "draining" in refused.json()["detail"]
            batch = await client.post("/v1/batch", json={"batch": [track_body(account, 3)]})
            assert batch.status_code == 503 and batch.headers["Retry-After"]
            assert await _ready(client) == (503, {"status": "draining", "drained": False})
            assert not in_hand.done()
        finally:
            private_broker.resume()
        answered = await in_hand
        assert answered.status_code == 200  # accepted before the drain: kept
        deadline = time.monotonic() + 10
        while (ready := await _ready(client)) != (503, {"status": "draining", "drained": True}):
            assert time.monotonic() < deadline, ready
            await asyncio.sleep(0.05)
        assert (await client.get("/healthz")).status_code == 200  # up: it only drains
    delivered = await read_topic(
        private_broker.bootstrap_servers,
        topics.USAGE_EVENTS,
        match=lambda e: e.account_id == account,
        count=2,
        settle=1,
    )
    assert sorted(e.data["message_id"] for e in delivered) == ["m-0", "m-1"]


async def test_sigusr1_drains_the_ingest_process(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """What ``uptake run`` sends: the process keeps running, drained, until SIGTERM."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "INGEST_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'ingest.db'}",
        "UPTAKE_DATA_DIR": str(tmp_path),
        "UPTAKE_SECRET": TEST_SECRET,
    }
    account = f"usr1-{uuid.uuid4().hex[:8]}"
    with service_process("ingest", env) as (url, proc):
        async with http_client(base_url=url, headers=auth("ingest"), timeout=10) as client:
            assert (await client.post("/v1/track", json=track_body(account, 0))).status_code == 200
            os.kill(proc.pid, signal.SIGUSR1)
            deadline = time.monotonic() + 10
            while (ready := await _ready(client)) != (
                503,
                {"status": "draining", "drained": True},
            ):
                assert time.monotonic() < deadline, ready
                await asyncio.sleep(0.05)
            refused = await client.post("/v1/track", json=track_body(account, 1))
            assert refused.status_code == 503 and refused.headers["Retry-After"] == "10"
            assert proc.poll() is None
        proc.terminate()
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
