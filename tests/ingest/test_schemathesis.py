"""schemathesis against ingest's OpenAPI: no 5xx, no response that breaks the schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from shared.broker import EmbeddedBroker
from tests.support import fuzz, service_process, token


@pytest.fixture(scope="module")
def ingest_schema(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[schemathesis.schemas.BaseSchema]:
    data = tmp_path_factory.mktemp("ingest-fuzz")
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "INGEST_DATABASE_URL": f"sqlite+aiosqlite:///{data / 'ingest.db'}",
        "UPTAKE_DATA_DIR": str(Path(data)),
    }
    with service_process("ingest", env) as (url, _):
        yield schemathesis.openapi.from_url(f"{url}/openapi.json")


schema = schemathesis.pytest.from_fixture("ingest_schema")


@schema.parametrize()
@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case) -> None:
    fuzz(case, token("ingest"))
