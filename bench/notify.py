"""Notify benchmark: requests on Kafka -> emails received by a real SMTP server, per second,
next to the raw rate of aiosmtplib against the same server (the ceiling) in the same run.

    .venv/bin/python -m bench.notify [--requests 1000] [--database-url URL]

Starts its own embedded broker and an aiosmtpd server; SQLite in a temp dir unless
--database-url (PostgreSQL). Every request goes to a distinct contact (no frequency cap).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import threading
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any

os.environ.setdefault("LOG_LEVEL", "WARNING")
os.environ.setdefault("LOG_JSON", "false")
os.environ.setdefault("UPTAKE_SECRET", "bench-secret-0123456789abcdef-0123456789")

import aiosmtplib
from aiosmtpd.controller import Controller

from services.notify.app import create_app
from services.notify.settings import NotifySettings
from shared import topics
from shared.broker import EmbeddedBroker, free_port
from shared.envelope import wrap
from shared.kafka import Publisher
from shared.messages import NotifyRequested, Recipient
from tests.support import serve_app


class Sink:
    def __init__(self) -> None:
        self.received: dict[str, float] = {}
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.received.setdefault(rcpt, time.monotonic())
        return "250 OK"


async def raw_smtp(port: int, n: int, concurrency: int = 8) -> float:
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "a@b.test", f"raw{i}@bench.test", "raw"
        msg.set_content("x" * 2000)
        async with sem:
            await aiosmtplib.send(msg, hostname="127.0.0.1", port=port, start_tls=False)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.perf_counter() - started)


async def run(n: int, database_url: str | None) -> None:
    data = Path(tempfile.mkdtemp(prefix="bench-notify-"))
    broker = EmbeddedBroker(port=free_port(), log_path=data / "tansu.log")
    await broker.start(partitions=6)
    sink = Sink()
    smtp_port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    try:
        settings = NotifySettings(
            KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,  # type: ignore[call-arg]
            NOTIFY_DATABASE_URL=database_url or f"sqlite+aiosqlite:///{data / 'notify.db'}",
            UPTAKE_DATA_DIR=data,
            SMTP_HOST="127.0.0.1",
            SMTP_PORT=smtp_port,
            NOTIFY_POLL_INTERVAL=0.05,
            NOTIFY_ACCOUNT_CAP=0,  # 20 emails per account here: the cap would defer most
        )
        ceiling = await raw_smtp(smtp_port, min(n, 500))
        run_id = uuid.uuid4().hex[:6]
        requests = [
            NotifyRequested(
                idempotency_key=f"{run_id}-{i}:welcome",
                channel="email",
                template_id="welcome",
                to=[Recipient(email=f"c{i}-{run_id}@bench.test", name=f"Contact {i}")],
                context={"account_name": f"Account {i % 50}", "csm_name": "Grace"},
                from_name="Grace",
            )
            for i in range(n)
        ]
        async with serve_app(create_app(settings)):
            publisher = Publisher(broker.bootstrap_servers, client_id="bench")
            await publisher.start()
            started = time.monotonic()
            await publisher.publish_many(
                (
                    topics.NOTIFY_REQUESTS,
                    wrap(r, type="notify.requested", account_id=f"acct-{i % 50}", source="bench"),
                )
                for i, r in enumerate(requests)
            )
            await publisher.stop()
            deadline = started + 600
            while len(sink.received) < n + min(n, 500) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            elapsed = time.monotonic() - started
        ours = [t for k, t in sink.received.items() if k.endswith(f"-{run_id}@bench.test")]
        latencies = sorted(t - started for t in ours)
        rate = len(ours) / elapsed
        backend = "postgresql" if database_url else "sqlite"
        print(f"notify e2e ({backend}): {len(ours)}/{n} emails in {elapsed:.2f}s = {rate:.0f}/s")
        print(
            f"  time to receipt after publish: p50 {latencies[len(latencies) // 2]:.2f}s, "
            f"p95 {latencies[int(len(latencies) * 0.95) - 1]:.2f}s (all published at once)"
        )
        print(f"raw aiosmtplib to the same server (8 concurrent): {ceiling:.0f}/s")
        print(f"ratio notify / raw SMTP: {rate / ceiling:.2f}")
    finally:
        controller.stop()
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--database-url", default=None)
    args, _ = parser.parse_known_args()
    asyncio.run(run(args.requests, args.database_url))


if __name__ == "__main__":
    main()
