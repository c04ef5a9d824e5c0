"""schemathesis against health's OpenAPI: no 5xx, responses as documented, bad input 4xx."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from shared.broker import EmbeddedBroker
from tests.support import fuzz, fuzzed_service, token


@pytest.fixture(scope="module")
def health_schema(
    module_broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[schemathesis.schemas.BaseSchema]:
    with fuzzed_service(
        "health",
        module_broker.bootstrap_servers,
        tmp_path_factory.mktemp("health-fuzz"),
        HEALTH_CONSUMER_GROUP="health-fuzz",
    ) as schema:
        yield schema


@schemathesis.pytest.from_fixture("health_schema").parametrize()
@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case) -> None:
    fuzz(case, token("admin"))
