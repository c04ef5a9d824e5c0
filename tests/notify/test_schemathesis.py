"""schemathesis against notify's OpenAPI: no 5xx, no response that breaks the schema."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from shared.broker import EmbeddedBroker
from tests.support import fuzz, fuzzed_service, token


@pytest.fixture(scope="module")
def notify_schema(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[schemathesis.schemas.BaseSchema]:
    with fuzzed_service(
        "notify",
        broker.bootstrap_servers,
        tmp_path_factory.mktemp("notify-fuzz"),
        NOTIFY_CONSUMER_GROUP="notify-fuzz",
    ) as schema:
        yield schema


@schemathesis.pytest.from_fixture("notify_schema").parametrize()
@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case) -> None:
    fuzz(case, token("admin"))
