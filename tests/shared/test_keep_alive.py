"""A service keeps an idle HTTP connection open longer than its clients keep theirs.

uvicorn's default (5 s) equals httpx's pool expiry: a request sent on a connection just as
the server closed it failed with "Server disconnected without sending a response" (the
demo's settle loop died of it on a loaded machine; the console's API calls risk the same).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from shared.broker import EmbeddedBroker
from tests.support import TEST_SECRET, http_client, service_process


def _client_address(response: httpx.Response) -> object:
    return response.extensions["network_stream"].get_extra_info("client_addr")


async def test_an_idle_connection_outlives_the_clients_five_seconds(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "INGEST_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'ingest.db'}",
        "UPTAKE_DATA_DIR": str(tmp_path),
        "UPTAKE_SECRET": TEST_SECRET,
    }
    with service_process("ingest", env) as (url, _):
        # a client that keeps its connections longer than httpx's 5 s, as a load balancer
        # does: the server must not close first
        limits = httpx.Limits(keepalive_expiry=30)
        async with http_client(base_url=url, timeout=10, limits=limits) as client:
            first = await client.get("/healthz")
            assert first.status_code == 200
            await asyncio.sleep(6)  # idle past uvicorn's default keep-alive
            second = await client.get("/healthz")
            assert second.status_code == 200
            assert _client_address(second) == _client_address(first), "a new connection"
