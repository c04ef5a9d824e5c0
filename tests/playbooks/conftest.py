"""The playbooks service on loopback with a clock the test moves, a publisher, a client."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from services.playbooks.app import create_app
from services.playbooks.consumer import TOPICS
from services.playbooks.scheduler import StepScheduler
from services.playbooks.settings import PlaybooksSettings
from shared import topics
from shared.broker import EmbeddedBroker
from shared.envelope import Envelope, wrap
from shared.kafka import Publisher
from shared.messages import AccountUpserted, AlertChanged, ContactUpserted, NotifyRequested
from tests.support import auth, http_client, read_topic, serve_app, skip_to_end


@dataclass
class Clock:
    """The service's "now": starts at the real time, moves only when a test says so."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Playbooks:
    url: str
    app: FastAPI
    clock: Clock
    publisher: Publisher
    client: httpx.AsyncClient
    bootstrap: str
    database_url: str

    @property
    def scheduler(self) -> StepScheduler:
        scheduler: StepScheduler = self.app.state.scheduler
        return scheduler

    async def publish(
        self, topic: str, type: str, account_id: str, message: BaseModel, **kw: Any
    ) -> None:
        env = wrap(message, type=type, account_id=account_id, source="tests", **kw)
        await self.publisher.publish(topic, env)

    async def alert(self, account_id: str, type: str = "alert.opened", **fields: Any) -> str:
        data: dict[str, Any] = {
            "alert_id": f"al-{uuid.uuid4().hex[:10]}",
            "rule_id": "rule-1",
            "rule_type": "score_drop",
            "status": "open",
            "severity": 3,
            "owner": None,
            "title": "Score dropped",
            "reason": "score -20 in 7 days",
            "opened_at": datetime.now(UTC),
        }
        data.update(fields)
        await self.publish(topics.HEALTH_ALERTS, type, account_id, AlertChanged(**data))
        return str(data["alert_id"])

    async def account(self, account_id: str, **fields: Any) -> None:
        msg = AccountUpserted(message_id=uuid.uuid4().hex, **fields)
        await self.publish(topics.ACCOUNTS, "account.upserted", account_id, msg)

    async def contact(self, account_id: str, user_id: str, **fields: Any) -> None:
        msg = ContactUpserted(message_id=uuid.uuid4().hex, user_id=user_id, **fields)
        await self.publish(topics.ACCOUNTS, "contact.upserted", account_id, msg)

    async def wait_contacts(self, account_id: str, count: int) -> list[dict[str, Any]]:
        """Until the service stored ``count`` contacts of the account (they are recipients)."""

        async def fetch() -> list[dict[str, Any]]:
            r = await self.client.get(f"/v1/accounts/{account_id}")
            return list(r.json()["contacts"]) if r.status_code == 200 else []

        return list(await until(fetch, lambda c: len(c) >= count))

    async def get(self, path: str, **params: Any) -> Any:
        r = await self.client.get(path, params=params)
        assert r.status_code == 200, r.text
        return r.json()

    async def groups(self, account_id: str, **params: Any) -> list[dict[str, Any]]:
        page = await self.get("/v1/task-groups", account_id=account_id, **params)
        items: list[dict[str, Any]] = page["items"]
        return items

    async def wait_groups(
        self, account_id: str, count: int, *, timeout: float = 20, **params: Any
    ) -> list[dict[str, Any]]:
        return await until(
            lambda: self.groups(account_id, **params), lambda g: len(g) >= count, timeout
        )


async def until(
    fetch: Callable[[], Awaitable[Any]], ok: Callable[[Any], bool], timeout: float = 20
) -> Any:
    """Poll ``fetch`` until ``ok`` holds; fail with the last value at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if ok(value):
            return value
        assert time.monotonic() < deadline, f"condition not reached in {timeout}s: {value!r}"
        await asyncio.sleep(0.1)


async def notify_requests(
    playbooks: Playbooks, account: str, count: int, settle: float = 0.3
) -> list[NotifyRequested]:
    """The notify requests of this account: ``count`` of them, then ``settle`` s for extras."""
    envs: list[Envelope] = await read_topic(
        playbooks.bootstrap,
        topics.NOTIFY_REQUESTS,
        match=lambda e: e.account_id == account,
        count=count,
        timeout=10,
        settle=settle,
    )
    return [e.payload(NotifyRequested) for e in envs]


def playbooks_settings(
    bootstrap: str, db_url: str, data_dir: Path, **extra: Any
) -> PlaybooksSettings:
    values: dict[str, Any] = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "PLAYBOOKS_DATABASE_URL": db_url,
        "UPTAKE_DATA_DIR": data_dir,
        "PLAYBOOKS_CONSUMER_GROUP": f"playbooks-{uuid.uuid4().hex[:8]}",
        "PLAYBOOKS_SCHEDULER_ENABLED": False,
        **extra,
    }
    return PlaybooksSettings(**values)


@contextlib.asynccontextmanager
async def running(
    broker: EmbeddedBroker, db_url: str, tmp_path: Path, **extra: Any
) -> AsyncIterator[Playbooks]:
    clock = Clock()
    settings = playbooks_settings(broker.bootstrap_servers, db_url, tmp_path, **extra)
    await skip_to_end(broker.bootstrap_servers, settings.consumer_group, TOPICS)
    app = create_app(settings, clock=clock)
    publisher = Publisher(broker.bootstrap_servers, client_id="tests")
    await publisher.start()
    try:
        async with (
            serve_app(app) as url,
            http_client(base_url=url, headers=auth("admin"), timeout=20) as client,
        ):
            yield Playbooks(url, app, clock, publisher, client, broker.bootstrap_servers, db_url)
    finally:
        await publisher.stop()


@pytest.fixture
async def playbooks(
    broker: EmbeddedBroker, database_url: Callable[[str], Awaitable[str]], tmp_path: Path
) -> AsyncIterator[Playbooks]:
    """The service on SQLite and on PostgreSQL in turn; the scheduler runs when a test says."""
    async with running(broker, await database_url("playbooks"), tmp_path) as service:
        yield service


@pytest.fixture
async def live_playbooks(
    broker: EmbeddedBroker, database_url: Callable[[str], Awaitable[str]], tmp_path: Path
) -> AsyncIterator[Playbooks]:
    """The same with its own scheduler running every 0.2 s on the real clock (and a short
    review window, so alert-started customer emails go out 1.2 s after their group)."""
    db_url = await database_url("playbooks")
    async with running(
        broker,
        db_url,
        tmp_path,
        PLAYBOOKS_SCHEDULER_ENABLED=True,
        PLAYBOOKS_SCHEDULER_INTERVAL=0.2,
        PLAYBOOKS_REVIEW_MINUTES=0.02,  # a 1.2 s review window on the real clock
    ) as service:
        yield service


def new_account() -> str:
    return f"acct-{uuid.uuid4().hex[:12]}"


def renewal_in(days: int) -> date:
    return (datetime.now(UTC) + timedelta(days=days)).date()


def new_csm(name: str = "csm") -> str:
    """A CSM email of this test's own (the shared broker replays other tests' messages)."""
    return f"{name}.{uuid.uuid4().hex[:6]}@cs.test"
