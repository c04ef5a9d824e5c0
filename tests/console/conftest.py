"""One running demo system (``uptake demo``, console included) for every console test.

Started once per session on free ports in a temporary data dir: the console is tested
against the four real services as a CS team would use it.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.auth import create_token
from shared.broker import free_port
from shared.services import available_services
from tests.support import TEST_SECRET, TLS

ACCOUNTS, DAYS = 24, 30


@dataclass
class DemoSystem:
    urls: dict[str, str]
    data_dir: Path
    sign_in_link: str
    output: list[str] = field(default_factory=list)

    @property
    def console(self) -> str:
        return self.urls["console"]

    def token(self, *scopes: str, subject: str = "maya@uptake.example") -> str:
        return create_token(TEST_SECRET, scopes=list(scopes), subject=subject)

    def api(self, service: str, method: str, path: str, **kwargs: Any) -> Any:
        """A call to a service's API as an admin tool (to check what the console did)."""
        headers = {"Authorization": f"Bearer {self.token('admin', subject='tests')}"}
        r = httpx.request(
            method, f"{self.urls[service]}{path}", headers=headers, timeout=30, verify=TLS, **kwargs
        )
        r.raise_for_status()
        return r.json() if r.content else None


def _reader(stream: Any, lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


@pytest.fixture(scope="package")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoSystem]:
    data_dir = tmp_path_factory.mktemp("console-demo")
    ports = {s.name: free_port() for s in available_services()}
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(
        {
            "UPTAKE_DATA_DIR": str(data_dir),
            "UPTAKE_SECRET": TEST_SECRET,
            "UPTAKE_BROKER_PORT": str(free_port()),
            "COLUMNS": "200",
            # as the demo's own test: 10 s after an account's last backdated event its
            # history is whole (the import posts without pause); 30 s by default
            "HEALTH_SETTLE_SECONDS": "10",
            **{f"{n.upper()}_PORT": str(p) for n, p in ports.items()},
        }
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shared.cli",
            "demo",
            "--accounts",
            str(ACCOUNTS),
            "--days",
            str(DAYS),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
    output: list[str] = []
    deadline = time.monotonic() + 480
    try:
        while not any(line.startswith("Running.") for line in output[-3:]):
            if proc.poll() is not None and lines.empty():
                pytest.fail("uptake demo exited:\n" + "".join(output))
            if time.monotonic() > deadline:
                pytest.fail("uptake demo did not finish in time:\n" + "".join(output))
            try:
                output.append(lines.get(timeout=1))
            except queue.Empty:
                continue
        link = re.search(r"(http://\S+/login\?token=\S+)", "".join(output))
        assert link, "".join(output)
        urls = {n: f"http://127.0.0.1:{p}" for n, p in ports.items()}
        yield DemoSystem(urls=urls, data_dir=data_dir, sign_in_link=link[1], output=output)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(check: Any, *, timeout: float = 30, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
