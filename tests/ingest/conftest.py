from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from shared.broker import EmbeddedBroker
from tests.support import serve_app


def ingest_settings(bootstrap: str, db_url: str, data_dir: Path, **extra: object) -> IngestSettings:
    return IngestSettings(
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        INGEST_DATABASE_URL=db_url,
        UPTAKE_DATA_DIR=data_dir,
        **extra,  # type: ignore[arg-type]
    )


def track_body(account: str, n: int) -> dict[str, str]:
    """The smallest valid ``/v1/track`` body: message ``m-<n>`` of ``account``."""
    return {"userId": "u", "event": "E", "groupId": account, "messageId": f"m-{n}"}


@pytest.fixture
async def ingest(
    broker: EmbeddedBroker, database_url: Callable[[str], Awaitable[str]], tmp_path: Path
) -> AsyncIterator[str]:
    """The ingest service on loopback, on SQLite and on PostgreSQL in turn."""
    settings = ingest_settings(broker.bootstrap_servers, await database_url("ingest"), tmp_path)
    async with serve_app(create_app(settings)) as url:
        yield url
