"""Notify fixtures: a real SMTP server (aiosmtpd), the notify app, a request publisher."""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from fastapi import FastAPI

from services.notify.app import create_app
from services.notify.settings import NotifySettings
from shared import topics
from shared.broker import EmbeddedBroker, free_port
from shared.envelope import Envelope, wrap
from shared.kafka import Publisher
from shared.messages import NotifyRequested, Recipient
from tests.support import read_records, serve_app

# One consumer group for the whole session: each test's app resumes where the last stopped,
# as a restarted service would, instead of replaying every earlier test's requests.
GROUP = f"notify-tests-{uuid.uuid4().hex[:8]}"


@dataclass
class Received:
    rcpt: list[str]
    message: EmailMessage
    at: float
    tls: bool = False  # the session had been upgraded (STARTTLS) when DATA came
    login: str | None = None  # who authenticated (SMTP AUTH), if anyone


@dataclass
class Inbox:
    """What the SMTP server received; ``replies`` scripts answers for the next DATA commands."""

    messages: list[Received] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            if self.replies:
                return self.replies.pop(0)
            msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
            assert isinstance(msg, EmailMessage)
            login = getattr(session, "auth_data", None)
            self.messages.append(
                Received(
                    list(envelope.rcpt_tos),
                    msg,
                    time.monotonic(),
                    tls=session.ssl is not None,
                    login=login.login.decode() if login is not None else None,
                )
            )
        return "250 OK"

    def to(self, address: str) -> list[Received]:
        with self.lock:
            return [m for m in self.messages if address in m.rcpt]

    async def wait_for(self, address: str, count: int, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.to(address)
            if len(found) >= count:
                return found
            await asyncio.sleep(0.05)
        return self.to(address)


@dataclass
class SmtpServer:
    host: str
    port: int
    inbox: Inbox


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", port, inbox)
    finally:
        controller.stop()


def notify_settings(bootstrap: str, db_url: str, data_dir: Path, **extra: Any) -> NotifySettings:
    values: dict[str, Any] = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "NOTIFY_DATABASE_URL": db_url,
        "UPTAKE_DATA_DIR": data_dir,
        "NOTIFY_CONSUMER_GROUP": GROUP,
        # new requests wake the worker; the poll finds due retries. Each idle poll is four
        # queries: at 0.05 s the notify tests spent a fifth of their CPU polling
        "NOTIFY_POLL_INTERVAL": 0.2,
        "NOTIFY_RETRY_BASE": 0.3,
        "NOTIFY_RETRY_MAX": 2.0,
        "NOTIFY_MAX_ATTEMPTS": 4,
        "EMAIL_FROM": "Acme Success <success@acme.test>",
        **extra,
    }
    return NotifySettings(**values)


AppFactory = Callable[..., Awaitable[tuple[str, FastAPI]]]


@dataclass
class NotifyHarness:
    """Builds notify apps on one database; ``start`` serves one until the test ends."""

    broker: EmbeddedBroker
    db_url: str
    data_dir: Path
    smtp: SmtpServer | None
    stack: list[Any] = field(default_factory=list)

    def settings(self, **extra: Any) -> NotifySettings:
        if self.smtp is not None:
            extra = {"SMTP_HOST": self.smtp.host, "SMTP_PORT": self.smtp.port, **extra}
        return notify_settings(self.broker.bootstrap_servers, self.db_url, self.data_dir, **extra)

    async def start(self, **extra: Any) -> str:
        cm = serve_app(create_app(self.settings(**extra)))
        url = await cm.__aenter__()
        self.stack.append(cm)
        return url

    async def stop(self) -> None:
        while self.stack:
            await self.stack.pop().__aexit__(None, None, None)


@pytest.fixture
async def harness(
    broker: EmbeddedBroker,
    database_url: Callable[[str], Awaitable[str]],
    tmp_path: Path,
    smtp: SmtpServer,
) -> AsyncIterator[NotifyHarness]:
    h = NotifyHarness(broker, await database_url("notify"), tmp_path, smtp)
    try:
        yield h
    finally:
        await h.stop()


def request(
    *,
    key: str | None = None,
    channel: str = "email",
    template_id: str = "welcome",
    to: list[Recipient] | None = None,
    context: dict[str, Any] | None = None,
    **extra: Any,
) -> NotifyRequested:
    return NotifyRequested(
        idempotency_key=key or f"tg-{uuid.uuid4().hex[:8]}:welcome",
        channel=channel,
        template_id=template_id,
        to=to or [],
        context=context or {"account_name": "Acme"},
        **extra,
    )


async def publish(broker: EmbeddedBroker, account_id: str, *requests: NotifyRequested) -> None:
    publisher = Publisher(broker.bootstrap_servers, client_id="tests")
    await publisher.start()
    try:
        await publisher.publish_many(
            [
                (
                    topics.NOTIFY_REQUESTS,
                    wrap(r, type="notify.requested", account_id=account_id, source="playbooks"),
                )
                for r in requests
            ]
        )
    finally:
        await publisher.stop()


async def publish_raw(broker: EmbeddedBroker, envelope: Envelope) -> None:
    publisher = Publisher(broker.bootstrap_servers, client_id="tests")
    await publisher.start()
    try:
        await publisher.publish(topics.NOTIFY_REQUESTS, envelope)
    finally:
        await publisher.stop()


def new_account() -> str:
    return f"acct-{uuid.uuid4().hex[:10]}"


def new_email(name: str = "ada") -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}@customer.test"


@dataclass
class Dead:
    """A dead letter: the envelope it carries and its headers."""

    envelope: Envelope
    raw: bytes
    headers: dict[str, str]


async def read_dead_letters(
    broker: EmbeddedBroker, account: str, count: int, *, settle: float = 0.3, timeout: float = 15
) -> list[Dead]:
    """``notify.requests.v1.dlq`` messages of one account, with their headers."""
    records = await read_records(
        broker.bootstrap_servers,
        topics.dlq(topics.NOTIFY_REQUESTS),
        match=lambda env: env.account_id == account,
        count=count,
        timeout=timeout,
        settle=settle,
    )
    return [
        Dead(r.envelope, r.value, {k: v.decode() for k, v in r.headers.items()}) for r in records
    ]
