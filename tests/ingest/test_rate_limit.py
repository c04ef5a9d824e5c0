"""The per-write-key rate limit: 429 with Retry-After, other keys unaffected."""

from __future__ import annotations

from pathlib import Path

from services.ingest.app import create_app
from shared.broker import EmbeddedBroker
from tests.ingest.conftest import ingest_settings
from tests.support import auth, http_client, serve_app


async def test_rate_limit_per_write_key_answers_429_with_retry_after(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = ingest_settings(
        broker.bootstrap_servers,
        f"sqlite+aiosqlite:///{tmp_path / 'i.db'}",
        tmp_path,
        INGEST_RATE_LIMIT=1,
        INGEST_RATE_BURST=3,
    )
    event = {"userId": "u", "event": "E", "groupId": "acct-rate"}
    async with serve_app(create_app(settings)) as url, http_client(base_url=url) as client:
        first_key, second_key = auth("ingest"), auth("ingest")
        answers = [
            (await client.post("/v1/track", json=event, headers=first_key)).status_code
            for _ in range(4)
        ]
        limited = await client.post("/v1/track", json=event, headers=first_key)
        other = await client.post("/v1/track", json=event, headers=second_key)
    assert answers == [200, 200, 200, 429]
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert other.status_code == 200  # the limit is per write key
