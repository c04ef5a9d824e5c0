"""The config cache: a read that was on its way when a PUT landed does not undo the PUT."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.health import configstore
from services.health.config import load_config_file
from services.health.configstore import ConfigStore
from services.health.settings import DEFAULT_CONFIG


async def test_a_read_in_flight_does_not_undo_a_put(monkeypatch: pytest.MonkeyPatch) -> None:
    stored: dict[str, Any] = {}
    reading = asyncio.Event()
    release = asyncio.Event()

    async def get_config(session: object, key: str) -> Any:
        value = stored.get(key)  # what was committed when the read began
        reading.set()
        await release.wait()
        return value

    async def put_config(session: object, key: str, value: Any, now: object) -> None:
        stored[key] = value

    monkeypatch.setattr(configstore.repo, "get_config", get_config)
    monkeypatch.setattr(configstore.repo, "put_config", put_config)

    @contextlib.asynccontextmanager
    async def sessions() -> AsyncIterator[None]:
        yield None

    store = ConfigStore(
        sessions,  # type: ignore[arg-type]
        default_metrics=load_config_file(DEFAULT_CONFIG),
        default_budget=5,
    )
    before = asyncio.create_task(store.alert_budget())  # e.g. the consumer's batch
    await reading.wait()
    await store.set_alert_budget(None, 40)  # type: ignore[arg-type]
    release.set()
    assert await before in (5, 40)  # read before the PUT: either is right for that call
    assert await store.alert_budget() == 40  # but the cache keeps the PUT's value
