"""Several replicas of each service, as separate processes on PostgreSQL, for the e2e
replica test: start, SIGKILL, add and SIGTERM replicas while load runs, then wait until
the whole system is quiet (every consumer group at the end of its topics, nothing new)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.playbooks.consumer import TOPICS as PLAYBOOKS_TOPICS
from shared import topics
from shared.broker import EmbeddedBroker, free_port
from shared.envelope import Envelope
from tests.e2e.harness import E2E_ENV, FAST_LOOPS, SlackStandIn, SmtpSink
from tests.support import (
    TEST_SECRET,
    TopicRecord,
    http_client,
    partitions_of,
    serve_app,
    true_end_offsets,
)

# What each consumer group reads (services/<name>/app.py).
GROUP_TOPICS: dict[str, list[str]] = {
    "health": [topics.USAGE_EVENTS, topics.ACCOUNTS],
    "playbooks": list(PLAYBOOKS_TOPICS),
    "notify": [topics.NOTIFY_REQUESTS],
}


@dataclass(frozen=True)
class Arrival:
    """One message as the SMTP server took it."""

    message_id: str
    recipients: tuple[str, ...]
    at: float  # wall clock (time.time()), comparable with envelope timestamps


class RecordingSmtp(SmtpSink):
    """The e2e SMTP sink, also keeping each message's Message-ID and arrival time: the raw
    count (duplicates included) is what a mailbox would show. ``delay`` holds each answer
    back, as a real server's checks do, so that sends are in flight for a while."""

    def __init__(self, *, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.arrivals: list[Arrival] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        answer = await super().handle_DATA(server, session, envelope)
        with self.lock:
            msg: EmailMessage = self.messages[-1]
            rcpts = tuple(r.lower() for r in envelope.rcpt_tos)
            self.arrivals.append(Arrival(str(msg["Message-ID"]), rcpts, time.time()))
        await asyncio.sleep(self.delay)
        return answer

    def snapshot(self) -> list[Arrival]:
        with self.lock:
            return list(self.arrivals)


@dataclass
class Replica:
    service: str
    name: str  # e.g. "notify-2"
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    stopped_at: float | None = None  # wall clock of the SIGKILL / SIGTERM
    how: str | None = None  # "killed" | "terminated"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.stopped_at is None and self.process.poll() is None


@dataclass
class Cluster:
    """The processes of a replicated system; any live replica answers for its service
    (they share their service's database)."""

    env: dict[str, str]
    data: Path
    broker: EmbeddedBroker
    smtp: RecordingSmtp
    slack: SlackStandIn
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    replicas: list[Replica] = field(default_factory=list)
    _numbers: dict[str, itertools.count[int]] = field(default_factory=dict)

    def live(self, service: str) -> list[Replica]:
        return [r for r in self.replicas if r.service == service and r.alive]

    def url(self, service: str) -> str:
        return self.live(service)[0].url

    def spawn(self, service: str, **env: str) -> Replica:
        """``python -m services.<service>`` on a free port, its log in the data folder."""
        n = next(self._numbers.setdefault(service, itertools.count(1)))
        name = f"{service}-{n}"
        port = free_port()
        log = self.data / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", f"services.{service}"],
                env={
                    **self.env,
                    **self.service_env.get(service, {}),
                    f"{service.upper()}_PORT": str(port),
                    **env,
                },
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        replica = Replica(service, name, port, proc, log)
        self.replicas.append(replica)
        return replica

    async def start(self, service: str, **env: str) -> Replica:
        replica = self.spawn(service, **env)
        await wait_ready([replica])
        return replica

    def kill(self, replica: Replica) -> None:
        """SIGKILL: no drain, no commit, no lease given back."""
        replica.stopped_at, replica.how = time.time(), "killed"
        os.kill(replica.process.pid, signal.SIGKILL)
        replica.process.wait()

    async def terminate(self, replica: Replica, *, timeout: float = 60) -> None:
        """SIGTERM, as a scale-down does: the replica finishes and commits its batch,
        leaves its group, and exits."""
        replica.stopped_at, replica.how = time.time(), "terminated"
        replica.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while replica.process.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{replica.name} did not exit {timeout}s after SIGTERM")
            await asyncio.sleep(0.1)
        # uvicorn re-raises the signal once it has shut down: -SIGTERM is a clean exit
        code = replica.process.returncode
        assert code in (0, -signal.SIGTERM), f"{replica.name} exited {code}"

    def close(self) -> None:
        for r in self.replicas:
            if r.process.poll() is None:
                r.process.send_signal(signal.SIGTERM)
        for r in self.replicas:
            try:
                r.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                r.process.kill()
                r.process.wait()


async def wait_ready(replicas: Iterable[Replica], *, timeout: float = 120) -> None:
    """Until every replica answers ``/readyz`` (database and broker reachable)."""
    deadline = time.monotonic() + timeout
    async with http_client(timeout=2) as client:
        for r in replicas:
            while True:
                if r.process.poll() is not None:
                    raise RuntimeError(f"{r.name} exited with {r.process.returncode}: {r.log}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{r.url}/readyz")).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{r.name} not ready after {timeout}s")
                await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def replicated_system(
    data: Path,
    smtp: RecordingSmtp,
    database_urls: dict[str, str],
    replicas: dict[str, int],
    *,
    partitions: int = 6,
    service_env: dict[str, dict[str, str]] | None = None,
    **extra_env: str,
) -> AsyncIterator[Cluster]:
    """A broker of its own, the Slack stand-in, and ``replicas[name]`` processes of each
    service on the (already migrated) ``database_urls``; as deployed, replicas do not
    migrate (``AUTO_MIGRATE=false``: a migrate job ran first) and share one consumer group
    per service. ``service_env`` adds settings for one service's replicas only."""
    broker = EmbeddedBroker(port=free_port(), log_path=data / "tansu.log")
    await broker.start(partitions=partitions)
    slack = SlackStandIn()
    try:
        async with serve_app(slack.app()) as slack_url:
            env = {
                **os.environ,
                **E2E_ENV,
                **FAST_LOOPS,
                "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                "UPTAKE_DATA_DIR": str(data),
                "UPTAKE_SECRET": TEST_SECRET,
                "HOST": "127.0.0.1",
                "AUTO_MIGRATE": "false",
                "SMTP_HOST": "127.0.0.1",
                "SMTP_PORT": str(smtp.port),
                "SMTP_STARTTLS": "false",
                "EMAIL_FROM": "success@uptake.test",
                "SLACK_BOT_TOKEN": "xoxb-e2e",
                "SLACK_API_BASE": slack_url,
                "LOG_JSON": "true",
                "LOG_LEVEL": "WARNING",
                **{f"{s.upper()}_DATABASE_URL": url for s, url in database_urls.items()},
                **extra_env,
            }
            cluster = Cluster(
                env=env,
                data=data,
                broker=broker,
                smtp=smtp,
                slack=slack,
                service_env=service_env or {},
            )
            try:
                started = [cluster.spawn(s) for s, n in replicas.items() for _ in range(n)]
                await wait_ready(started)
                yield cluster
            finally:
                cluster.close()
    finally:
        broker.stop()


async def end_offsets(bootstrap: str, names: Iterable[str]) -> dict[TopicPartition, int]:
    """Every partition's true end offset (see ``true_end_offsets`` for Tansu's quirk)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        return await true_end_offsets(consumer, await partitions_of(consumer, names))
    finally:
        await consumer.stop()


async def lag(bootstrap: str, group: str, ends: dict[TopicPartition, int]) -> int:
    """How many messages of ``ends``' partitions ``group`` has not committed yet."""
    peek = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await peek.start()
    try:
        behind = 0
        for tp, end in ends.items():
            if tp.topic in GROUP_TOPICS[group]:
                behind += max(0, end - (await peek.committed(tp) or 0))
        return behind
    finally:
        await peek.stop()


async def read_all(bootstrap: str, topic: str) -> list[TopicRecord]:
    """Every record on ``topic`` up to its current end (no waiting for more)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: list[TopicRecord] = []
    try:
        tps = await partitions_of(consumer, [topic])
        ends = await true_end_offsets(consumer, tps)
        await consumer.seek_to_beginning(*tps)

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in tps])

        while await behind():
            batch = await consumer.getmany(*tps, timeout_ms=500)
            for records in batch.values():
                for rec in records:
                    if rec.offset >= ends[TopicPartition(rec.topic, rec.partition)]:
                        continue
                    headers = {k: bytes(v) for k, v in rec.headers or ()}
                    env = Envelope.parse(rec.value or b"")
                    found.append(TopicRecord(rec.key, headers, env, rec.value or b""))
    finally:
        await consumer.stop()
    return found
