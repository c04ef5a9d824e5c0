"""Fixtures for the end-to-end tests: one running system for the flow, settled-import and
soak modules (one xdist group, tests/conftest.py), each test on accounts of its own.

Their tests run one at a time on it, which two of them rely on: the settled import waits
for health's global count of accounts pending to reach zero, and the soak measures each
service's memory growth over its own run only. A test that leaves the system broken (the
backlog test restarts health) fails the ones after it too: their failures say so."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.e2e.harness import Running, system_in


@pytest.fixture(scope="package")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    async with system_in(tmp_path_factory.mktemp("e2e")) as system:  # logs kept for a look
        yield system
