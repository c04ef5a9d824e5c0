"""schemathesis against the health, playbooks and notify OpenAPI specs, each service
running as its own process (ingest has its own run in tests/ingest): no 5xx, no response
that breaks its schema, bad input refused. An admin token, so every route is reached."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.e2e.harness import Running
from tests.support import fuzz, token

FUZZ = settings(
    max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)


def _openapi(service: str) -> Callable[..., Any]:
    @pytest.fixture(scope="module")
    def fixture(running: Running) -> schemathesis.schemas.BaseSchema:
        return schemathesis.openapi.from_url(f"{running.url(service)}/openapi.json")

    return fixture


health_openapi = _openapi("health")
playbooks_openapi = _openapi("playbooks")
notify_openapi = _openapi("notify")


@schemathesis.pytest.from_fixture("health_openapi").parametrize()
@FUZZ
def test_health_api(case: schemathesis.Case) -> None:
    fuzz(case, token("admin"))


@schemathesis.pytest.from_fixture("playbooks_openapi").parametrize()
@FUZZ
def test_playbooks_api(case: schemathesis.Case) -> None:
    fuzz(case, token("admin"))


@schemathesis.pytest.from_fixture("notify_openapi").parametrize()
@FUZZ
def test_notify_api(case: schemathesis.Case) -> None:
    fuzz(case, token("admin"))
