"""The whole system as it runs for real, for the e2e tests and ``bench/e2e.py``: the four
service processes (as ``uptake run`` starts them), the Tansu broker, a real SMTP server
(aiosmtpd) and a Slack stand-in on loopback."""

from __future__ import annotations

import contextlib
import email
import email.policy
import os
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from fastapi import FastAPI, Request

from shared.broker import EmbeddedBroker, free_port
from shared.services import available_services
from shared.settings import BaseServiceSettings
from shared.supervisor import System, start_system, stop_system
from tests.support import TEST_SECRET, serve_app


class SmtpSink:
    """An SMTP server that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.arrived: dict[str, float] = {}  # recipient -> first arrival (monotonic)
        self.lock = threading.Lock()
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(msg)  # type: ignore[arg-type]
            for rcpt in envelope.rcpt_tos:
                self.arrived.setdefault(rcpt, time.monotonic())
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return [m for m in self.messages if address in str(m["To"])]


@dataclass
class SlackStandIn:
    messages: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/chat.postMessage")
        async def post_message(request: Request) -> dict[str, Any]:
            self.messages.append(await request.json())
            return {"ok": True, "ts": f"{len(self.messages)}.000"}

        @app.get("/conversations.history")
        async def history(channel: str) -> dict[str, Any]:
            """As Slack's: the channel's messages, newest first, with their metadata."""
            found = [m for m in reversed(self.messages) if m.get("channel") == channel]
            return {
                "ok": True,
                "messages": [
                    {"text": m.get("text"), "metadata": m.get("metadata")} for m in found[:100]
                ],
            }

        @app.get("/readyz")
        async def ready() -> dict[str, str]:
            return {"status": "ok"}

        return app


@dataclass
class Running:
    system: System
    broker: EmbeddedBroker
    smtp: SmtpSink
    slack: SlackStandIn

    def url(self, service: str) -> str:
        return self.system.url(service)


E2E_ENV = {
    # as in production: https links, so emails carry RFC 8058 one-click (https only)
    "PUBLIC_BASE_URL": "https://notify.uptake.test",
}
FAST_LOOPS = {
    # quicker timers for tests (benchmarks run the defaults): every service reads its own
    # names and ignores the rest
    "HEALTH_DEBOUNCE_SECONDS": "0.3",
    # backdated data settles quickly, yet past a partition handover: a SIGKILLed health's
    # partitions wait out its 4 s session timeout before its successor takes them, and a
    # settle shorter than that let the successor judge a half-consumed history (a transient
    # inactivity alert, seen on a busy machine). The default (30 s) is well past it.
    "HEALTH_SETTLE_SECONDS": "10",
    "NOTIFY_POLL_INTERVAL": "0.3",
    # a 3 s review window before an alert's customer email (15 minutes by default)
    "PLAYBOOKS_REVIEW_MINUTES": "0.05",
}


@contextlib.asynccontextmanager
async def running_system(
    data: Path, smtp: SmtpSink, *, fast_loops: bool = True, **extra_env: str
) -> AsyncIterator[Running]:
    """Broker, Slack stand-in and the four services (separate processes) on free ports;
    ``fast_loops=False`` runs every timer at its default, as a deployment would."""
    broker = EmbeddedBroker(port=free_port(), log_path=data / "tansu.log")
    await broker.start(partitions=3)
    slack = SlackStandIn()
    try:
        async with serve_app(slack.app()) as slack_url:
            env = {
                **os.environ,
                **E2E_ENV,
                **(FAST_LOOPS if fast_loops else {}),
                "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                "UPTAKE_DATA_DIR": str(data),
                "UPTAKE_SECRET": TEST_SECRET,
                "SMTP_HOST": "127.0.0.1",
                "SMTP_PORT": str(smtp.port),
                "SMTP_STARTTLS": "false",
                "EMAIL_FROM": "success@uptake.test",
                "SLACK_BOT_TOKEN": "xoxb-e2e",
                "SLACK_API_BASE": slack_url,
                "LOG_JSON": "true",
                "LOG_LEVEL": "WARNING",
                **{f"{s.name.upper()}_PORT": str(free_port()) for s in available_services()},
                **extra_env,
            }
            settings = BaseServiceSettings(**env)  # type: ignore[arg-type]
            system = await start_system(settings, available_services(), env=env)
            try:
                yield Running(system, broker, smtp, slack)
            finally:
                stop_system(system)
    finally:
        broker.stop()


@contextlib.asynccontextmanager
async def system_in(
    data: Path, *, smtp: SmtpSink | None = None, fast_loops: bool = True, **extra_env: str
) -> AsyncIterator[Running]:
    """The whole system with its own SMTP server (``smtp``, or a plain sink), its logs and
    data under ``data``."""
    smtp = smtp or SmtpSink()
    smtp.controller.start()
    try:
        async with running_system(data, smtp, fast_loops=fast_loops, **extra_env) as running:
            yield running
    finally:
        smtp.controller.stop()


@contextlib.asynccontextmanager
async def standalone_system(*, fast_loops: bool = True, **extra_env: str) -> AsyncIterator[Running]:
    """The whole system in a temporary folder (for benchmarks)."""
    with tempfile.TemporaryDirectory() as tmp:
        async with system_in(Path(tmp), fast_loops=fast_loops, **extra_env) as running:
            yield running
