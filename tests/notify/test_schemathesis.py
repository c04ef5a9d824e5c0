"""schemathesis against notify's OpenAPI: no 5xx, no response that breaks the schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from shared.broker import EmbeddedBroker
from tests.support import fuzz, service_process, token


@pytest.fixture(scope="module")
def notify_schema(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[schemathesis.schemas.BaseSchema]:
    data = tmp_path_factory.mktemp("notify-fuzz")
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "NOTIFY_DATABASE_URL": f"sqlite+aiosqlite:///{data / 'notify.db'}",
        "UPTAKE_DATA_DIR": str(Path(data)),
        "NOTIFY_CONSUMER_GROUP": "notify-fuzz",
    }
    with service_process("notify", env) as (url, _):
        yield schemathesis.openapi.from_url(f"{url}/openapi.json")


schema = schemathesis.pytest.from_fixture("notify_schema")


@schema.parametrize()
@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case) -> None:
    fuzz(case, token("admin"))
