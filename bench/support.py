"""What the benchmarks share: a broker, service processes, wrk runs and their parsing."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from shared.broker import EmbeddedBroker, free_port
from tests.support import service_process, wait_ready

BENCH_SECRET = "bench-secret-0123456789abcdef-0123456789"


@contextmanager
def embedded_broker(partitions: int = 6) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(port=free_port())
    asyncio.run(broker.start(partitions=partitions))
    try:
        yield broker
    finally:
        broker.stop()


@contextmanager
def process(
    args: list[str], env: dict[str, str], ready_url: str
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, env={**os.environ, **env})
    try:
        wait_ready(ready_url, proc, timeout=60)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def service(name: str, env: dict[str, str]) -> Iterator[str]:
    """One Uptake service as its own process on a free port; yields its base URL."""
    data = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    full = {
        "UPTAKE_SECRET": BENCH_SECRET,
        "UPTAKE_DATA_DIR": str(data),
        "LOG_LEVEL": "WARNING",
        # benches seed through the REST APIs with one token, far past the per-token write
        # limit meant for people and CS tools (20/s): what they measure is not the limiter
        "API_WRITE_RATE": "1000000",
        "API_WRITE_BURST": "1000000",
    }
    try:
        with service_process(name, {**full, **env}) as (url, _):
            yield url
    finally:
        shutil.rmtree(data, ignore_errors=True)


@dataclass
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    errors: str


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    duration: int = 10,
    connections: int = 32,
    threads: int = 1,
) -> WrkResult:
    """POST ``body`` to ``url`` for ``duration`` seconds with wrk; parse its summary."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed: apt-get install wrk")
    with tempfile.TemporaryDirectory() as tmp:
        body_path = Path(tmp) / "body"
        body_path.write_bytes(body)
        lines = [
            'wrk.method = "POST"',
            f'local f = io.open("{body_path}", "rb")',
            "wrk.body = f:read('*a')",
            "f:close()",
        ]
        lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
        script = Path(tmp) / "post.lua"
        script.write_text("\n".join(lines) + "\n")
        out = subprocess.run(
            [
                "wrk",
                f"-t{threads}",
                f"-c{connections}",
                f"-d{duration}s",
                "--latency",
                "-s",
                str(script),
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return WrkResult(
        rps, p50, p99, int(non_2xx.group(1)) if non_2xx else 0, errors.group(1) if errors else ""
    )
