"""schemathesis against ingest's OpenAPI: no 5xx, no response that breaks the schema."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from shared.broker import EmbeddedBroker
from tests.support import fuzz, fuzzed_service, token


@pytest.fixture(scope="module")
def ingest_schema(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[schemathesis.schemas.BaseSchema]:
    with fuzzed_service(
        "ingest",
        broker.bootstrap_servers,
        tmp_path_factory.mktemp("ingest-fuzz"),
        # the fuzz judges answers to input: a 503 for a database that took over 5 s (two
        # busy cores in a suite run; designed, and tested in test_database_outage.py) is
        # not one, so the bound is out of its way here
        INGEST_DATABASE_TIMEOUT="30",
    ) as schema:
        yield schema


@schemathesis.pytest.from_fixture("ingest_schema").parametrize()
@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case) -> None:
    fuzz(case, token("ingest"))


@schemathesis.pytest.from_fixture("ingest_schema").include(path_regex="^/v1/tokens").parametrize()
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_token_registry_has_no_server_errors(case: schemathesis.Case) -> None:
    """The registry's endpoints with an admin token (the ingest key above only sees 403s)."""
    fuzz(case, token("admin"))
