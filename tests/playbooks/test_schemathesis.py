"""schemathesis against playbooks' OpenAPI: no 5xx, responses as documented, bad input 4xx."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from shared.broker import EmbeddedBroker
from tests.support import fuzz, fuzzed_service, token


@pytest.fixture(scope="module")
def playbooks_schema(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[schemathesis.schemas.BaseSchema]:
    with fuzzed_service(
        "playbooks",
        broker.bootstrap_servers,
        tmp_path_factory.mktemp("playbooks-fuzz"),
        PLAYBOOKS_CONSUMER_GROUP="playbooks-fuzz",
        # Its consumer replays the shared broker's history; with the scheduler (woken by
        # every stored batch) it would publish notify requests for other tests' accounts.
        PLAYBOOKS_SCHEDULER_ENABLED="false",
    ) as schema:
        yield schema


@schemathesis.pytest.from_fixture("playbooks_schema").parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case) -> None:
    fuzz(case, token("admin"))
