"""Fixtures for the end-to-end tests: one running system for the flow, settled-import and
soak modules (one xdist group, tests/conftest.py), each test on accounts of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.e2e.harness import Running, standalone_system


@pytest.fixture(scope="package")
async def running() -> AsyncIterator[Running]:
    async with standalone_system() as system:
        yield system
