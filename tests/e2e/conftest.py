"""Fixtures for the end-to-end tests: one running system per test module."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.e2e.harness import Running, SmtpSink, running_system


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.controller.start()
    yield sink
    sink.controller.stop()


@pytest.fixture(scope="module")
async def running(
    tmp_path_factory: pytest.TempPathFactory, smtp: SmtpSink
) -> AsyncIterator[Running]:
    async with running_system(tmp_path_factory.mktemp("e2e"), smtp) as system:
        yield system
