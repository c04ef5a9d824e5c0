"""Helpers the tests share: a real uvicorn server on loopback, a topic reader, tokens."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import httpx
import uvicorn
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import FastAPI

from shared.auth import create_token
from shared.broker import free_port
from shared.envelope import Envelope

TEST_SECRET = "test-secret-0123456789abcdef-0123456789"

# One TLS context for every HTTP client the tests make. httpx builds one per client unless
# given one, loading the CA bundle each time: 20 ms of CPU, and the tests' polling loops
# made thousands of clients (a sixth of the test workers' CPU). Make clients with these.
TLS = httpx.create_ssl_context()


def http_client(**kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(verify=TLS, **kwargs)


def http_client_sync(**kwargs: Any) -> httpx.Client:
    return httpx.Client(verify=TLS, **kwargs)


def token(*scopes: str) -> str:
    return create_token(TEST_SECRET, scopes=list(scopes), subject="tests")


def auth(*scopes: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(*scopes)}"}


@contextlib.asynccontextmanager
async def serve_app(app: FastAPI | Any, *, port: int | None = None) -> AsyncIterator[str]:
    """Run an ASGI app under a real uvicorn server (with its lifespan); yields the base URL.
    Without ``port``, the server's socket is bound here, to a port the kernel picks, so no
    other process can take it between choosing and binding."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart on the same port
    sock.bind(("127.0.0.1", port or 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, lifespan="on", access_log=False
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            if task.done():
                task.result()  # raises the startup error
                raise RuntimeError("server exited during startup")
            if time.monotonic() > deadline:
                raise TimeoutError("server did not start")
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def port_open(port: int) -> bool:
    """Something listens on this loopback port."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclasses.dataclass(frozen=True)
class TopicRecord:
    """One Kafka record as a consumer sees it: key, headers, the parsed envelope and the
    bytes it was parsed from."""

    key: bytes | None
    headers: dict[str, bytes]
    envelope: Envelope
    value: bytes


async def true_end_offsets(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """Each partition's end offset as a consumer finds it (assigns ``consumer`` to ``tps``).

    Tansu answers ListOffsets(latest) with the base offset of a partition's last record
    batch plus one, not the offset after its last record: trusted as is, a consumer
    group "skipped to the end" re-reads the rest of that batch, and "caught up" is
    declared early. So read on from there to the real end.
    """
    consumer.assign(tps)
    reported = await consumer.end_offsets(tps)
    for tp in tps:
        consumer.seek(tp, reported[tp])
    while await consumer.getmany(*tps, timeout_ms=300):
        pass
    return {tp: await consumer.position(tp) for tp in tps}


async def partitions_of(consumer: AIOKafkaConsumer, names: Iterable[str]) -> list[TopicPartition]:
    """Every partition of these topics (waiting for their metadata)."""
    tps: list[TopicPartition] = []
    for topic in names:
        parts = await consumer._client._wait_on_metadata(topic)
        tps += [TopicPartition(topic, p) for p in sorted(parts)]
    return tps


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    match: Callable[[Envelope], bool],
    count: int,
    timeout: float = 15.0,
    settle: float = 0.0,
) -> list[Envelope]:
    """Every envelope on ``topic`` (from the start) that ``match`` accepts.

    Returns as soon as ``count`` arrived (then waits ``settle`` seconds more to catch extras).
    """
    records = await read_records(
        bootstrap, topic, match=match, count=count, timeout=timeout, settle=settle
    )
    return [r.envelope for r in records]


async def read_records(
    bootstrap: str,
    topic: str,
    *,
    match: Callable[[Envelope], bool],
    count: int,
    timeout: float = 15.0,
    settle: float = 0.0,
) -> list[TopicRecord]:
    """As :func:`read_topic`, with each record's key and headers."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: list[TopicRecord] = []
    try:
        tps = await partitions_of(consumer, [topic])
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        settle_until: float | None = None
        while True:
            now = time.monotonic()
            if settle_until is None and len(found) >= count:
                settle_until = now + settle
            if settle_until is not None and now >= settle_until:
                break
            if now > deadline:
                warnings.warn(
                    f"read_topic({topic}) waited out its {timeout:.0f} s for {count} records"
                    f" and found {len(found)}",
                    stacklevel=3,
                )
                break
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for rec in records:
                    try:
                        env = Envelope.parse(rec.value)
                    except ValueError:
                        continue  # not an envelope (a dead letter of junk, say)
                    if match(env):
                        headers = {k: bytes(v) for k, v in rec.headers or ()}
                        found.append(TopicRecord(rec.key, headers, env, rec.value))
    finally:
        await consumer.stop()
    return found


async def skip_to_end(bootstrap: str, group_id: str, names: list[str]) -> None:
    """Commit the topics' end offsets for a new consumer group, so the service under test
    reads only this test's messages (a shared broker holds the earlier tests' too: replaying
    them cost every later test time and CPU)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        ends = await true_end_offsets(consumer, await partitions_of(consumer, names))
        await consumer.commit(dict(ends))
    finally:
        await consumer.stop()


@contextlib.contextmanager
def service_process(name: str, env: dict[str, str], *, timeout: float = 60) -> Any:
    """``python -m services.<name>`` as its own process (as ``uptake run`` starts it).

    Yields ``(base_url, process)``; stops it with SIGTERM (graceful) at the end.
    """
    port = free_port()
    full_env = {**os.environ, **env, f"{name.upper()}_PORT": str(port), "HOST": "127.0.0.1"}
    proc = subprocess.Popen([sys.executable, "-m", f"services.{name}"], env=full_env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, timeout=timeout)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_ready(url: str, proc: subprocess.Popen[bytes], *, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2, verify=TLS).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not ready after {timeout}s")
        time.sleep(0.1)


def fuzz(case: Any, token: str) -> None:
    """One schemathesis case: no 5xx, responses as the schema says, bad input refused.

    The positive-data check is left out: whether input is accepted often depends on state
    (is the account known? is the timestamp recent?) that no schema can express. And a case
    made negative only by its Authorization header is no longer negative once the valid
    token goes in, so "invalid data accepted" cannot be judged for it.
    """
    from schemathesis.core.parameters import ParameterLocation
    from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

    excluded = [positive_data_acceptance]
    if case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER):
        excluded.append(negative_data_rejection)
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, excluded_checks=excluded)


@contextlib.contextmanager
def fuzzed_service(name: str, bootstrap: str, data: Any, **env: str) -> Any:
    """One service as its own process on a SQLite file, and its OpenAPI schema to fuzz."""
    import schemathesis

    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        f"{name.upper()}_DATABASE_URL": f"sqlite+aiosqlite:///{data}/{name}.db",
        "UPTAKE_DATA_DIR": str(data),
        # One token sends every case: the per-token write limit would answer 429 for most.
        "API_WRITE_RATE": "100000",
        "API_WRITE_BURST": "100000",
        **env,
    }
    with service_process(name, env) as (url, _):
        yield schemathesis.openapi.from_url(f"{url}/openapi.json")
