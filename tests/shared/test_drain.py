"""``uptake run`` drains on stop: every event ingest answered 200 for is in health after a
restart, although the embedded broker forgets its log when it stops.

Each test runs ``uptake run`` as a subprocess on free ports and a data dir of its own.
"""

from __future__ import annotations

import gzip
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import psutil
import pytest

from shared.auth import create_token
from shared.broker import free_port
from shared.drain import PROBE_GRACE, drain_system
from shared.services import available_services
from shared.settings import BaseServiceSettings
from shared.supervisor import System
from tests.support import TEST_SECRET, http_client_sync, port_open, wait_ready

ACCOUNTS = [f"acct-drain-{i}" for i in range(20)]
BATCH = 2000  # events per /v1/batch call (~300 KB before gzip: under the 500 KB cap)


@dataclass
class Run:
    """One ``uptake run`` process, its ports, and what it printed (read as it comes)."""

    proc: subprocess.Popen[str]
    ports: dict[str, int]
    env: dict[str, str]
    lines: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, pattern: str, *, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if re.search(pattern, line):
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r} in:\n{self.output}")

    def service_pid(self, service: str) -> int:
        for child in psutil.Process(self.proc.pid).children():
            if f"services.{service}" in child.cmdline():
                return child.pid
        raise AssertionError(f"no {service} process under uptake run")

    def exit_code(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)


def _env(data_dir: Path, ports: dict[str, int], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(
        {
            "UPTAKE_DATA_DIR": str(data_dir),
            "UPTAKE_SECRET": TEST_SECRET,
            "UPTAKE_BROKER_PORT": str(ports["broker"]),
            "LOG_LEVEL": "WARNING",
            "INGEST_RATE_BURST": "1000000",
            **{f"{n.upper()}_PORT": str(p) for n, p in ports.items() if n != "broker"},
            **extra,
        }
    )
    return env


def _pump(stream: object, into: list[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.append(line)


@pytest.fixture
def start_run(tmp_path: Path) -> Iterator[object]:
    """``start(**env)``: ``uptake run`` on the same data dir and ports each time; killed
    (with its services) if a test leaves it running."""
    ports = {"broker": free_port(), **{s.name: free_port() for s in available_services()}}
    runs: list[Run] = []

    def start(**extra: str) -> Run:
        env = _env(tmp_path, ports, **extra)
        proc = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "run"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        run = Run(proc, ports, env)
        runs.append(run)
        threading.Thread(target=_pump, args=(proc.stdout, run.lines), daemon=True).start()
        threading.Thread(target=_pump, args=(proc.stderr, run.errors), daemon=True).start()
        for name in ports:
            if name != "broker":
                wait_ready(run.url(name), proc, timeout=90)  # type: ignore[arg-type]
        return run

    yield start
    for run in runs:
        if run.proc.poll() is None:
            children = psutil.Process(run.proc.pid).children(recursive=True)
            for child in children:
                child.send_signal(signal.SIGCONT)
                child.kill()
            run.proc.kill()
            run.proc.wait()


def _batches(n: int, tag: str) -> list[bytes]:
    """``n`` track events over the accounts, as gzip'd /v1/batch bodies."""
    now = datetime.now(UTC)
    events = [
        {
            "type": "track",
            "event": "report_created",
            "userId": f"user-{i % 200}",
            "groupId": ACCOUNTS[i % len(ACCOUNTS)],
            "messageId": f"{tag}-{i}",
            "timestamp": (now - timedelta(seconds=i % 3600)).isoformat(),
            "properties": {"n": i},
        }
        for i in range(n)
    ]
    return [
        gzip.compress(orjson.dumps({"batch": events[i : i + BATCH]}), compresslevel=1)
        for i in range(0, n, BATCH)
    ]


def _post_all(run: Run, n: int, tag: str) -> None:
    """Post ``n`` events, four requests at a time; every answer must be 200."""
    token = create_token(TEST_SECRET, scopes=["ingest"], subject="drain-test")
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    with http_client_sync(base_url=run.url("ingest"), headers=headers, timeout=30) as client:

        def post(body: bytes) -> None:
            response = client.post("/v1/batch", content=body)
            assert response.status_code == 200, response.text
            assert response.json() == {"success": True}

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(post, _batches(n, tag)))


def _events_in_health(run: Run, accounts: list[str] = ACCOUNTS) -> int:
    """Health's 'events' rollups (every event counted), summed over the test's accounts."""
    token = create_token(TEST_SECRET, scopes=["read"], subject="drain-test")
    total = 0
    with http_client_sync(
        base_url=run.url("health"), headers={"Authorization": f"Bearer {token}"}, timeout=10
    ) as client:
        for account in accounts:
            response = client.get(f"/v1/accounts/{account}/metrics", params={"days": 3})
            if response.status_code == 404:
                continue  # no event of it stored yet
            assert response.status_code == 200, response.text
            metric = next(m for m in response.json()["metrics"] if m["metric"] == "events")
            total += int(sum(metric["values"]))
    return total


def _freeze_health_once_consuming(run: Run) -> int:
    """SIGSTOP health once its consumer has joined its group and consumed: one frozen
    mid-join would leave the group rebalancing, which is another test (a probe that the
    broker does not answer is bounded by the drain's deadline)."""
    before = _events_in_health(run, ACCOUNTS[:1])  # an earlier run's, on the same data
    _post_all(run, 1, f"joined-{before}")
    deadline = time.monotonic() + 60
    while _events_in_health(run, ACCOUNTS[:1]) <= before:
        assert time.monotonic() < deadline, "health consumed nothing in 60 s"
        time.sleep(0.2)
    health = run.service_pid("health")
    os.kill(health, signal.SIGSTOP)
    return health


@pytest.mark.timeout(240)
def test_sigterm_right_after_the_last_200_keeps_every_event_and_frees_every_port(
    start_run: object,
) -> None:
    """Stopped after its last 200, a run drains; the next run on the same data finds every
    event, refuses to be started twice, and stops at once on a second signal."""
    n = 20_000  # 10 gzip'd batches; before the drain, a stop lost ~2 % of such a run
    run = start_run()  # type: ignore[operator]
    _post_all(run, n, "keep")
    stopped = time.monotonic()
    run.proc.send_signal(signal.SIGTERM)
    code = run.exit_code(timeout=90)
    took = time.monotonic() - stopped
    out = run.output
    assert code == 0, out + "".join(run.errors)
    assert "draining: ingest refuses new events" in out, out
    assert re.search(r"drained in [\d.]+ s", out), out
    print(f"drain of {n:,} events: {took:.1f} s; uptake run printed:\n{out}")

    again = start_run()  # type: ignore[operator]
    assert _events_in_health(again) == n
    assert port_open(again.ports["broker"])
    # a second `uptake run`, or `make demo`, beside a running one is refused at once
    holder = f"pid {again.proc.pid}: uptake run"
    for command in ("run", "demo"):
        _assert_second_run_refused(
            again.env, port=again.ports["broker"], holder=holder, command=command
        )
    _second_signal_stops_at_once(again)
    # even stopped in a hurry, nothing it started is left listening
    deadline = time.monotonic() + 5
    while any(port_open(p) for p in again.ports.values()):
        assert time.monotonic() < deadline, "something uptake run started is still listening"
        time.sleep(0.1)


def _second_signal_stops_at_once(run: Run) -> None:
    """A drain that cannot finish (health frozen) is cut short by a second signal, with a
    warning that what was left may be lost."""
    health = _freeze_health_once_consuming(run)
    try:
        _post_all(run, 2000, "hurry")
        run.proc.send_signal(signal.SIGTERM)
        run.wait_for_line(r"messages behind", timeout=30)
        hurried = time.monotonic()
        run.proc.send_signal(signal.SIGTERM)
    finally:
        os.kill(health, signal.SIGCONT)
    assert run.exit_code(timeout=30) == 1
    assert time.monotonic() - hurried < 15  # not the 60 s drain timeout
    errors = "".join(run.errors)
    assert "second signal: stopping now without draining" in errors, errors
    assert "may be lost" in errors
    assert "drained in" not in run.output


def _assert_second_run_refused(
    env: dict[str, str], *, port: int, holder: str, command: str = "run"
) -> None:
    """A second ``uptake run`` on the same ports stops at once, naming the port and its holder."""
    started = time.monotonic()
    second = subprocess.run(
        [sys.executable, "-m", "shared.cli", command], env=env, capture_output=True, timeout=30
    )
    elapsed = time.monotonic() - started
    assert second.returncode == 2, second.stderr
    # at once: 0.7 s on a quiet machine (it checks ports before importing the services);
    # the bound leaves room for the suite's five workers on two cores, far below a start-up
    assert elapsed < 15, f"the second run took {elapsed:.1f}s to refuse"
    assert b"broker.started" not in second.stdout + second.stderr
    err = second.stderr.decode()
    assert f"port {port} is in use (" in err, err
    assert holder in err, err
    assert "is Uptake already running?" in err
    assert "Running." not in second.stdout.decode()


@pytest.mark.timeout(180)
def test_a_drain_past_the_timeout_names_what_it_left_per_group_and_topic(
    start_run: object,
) -> None:
    run = start_run(UPTAKE_DRAIN_TIMEOUT="3")  # type: ignore[operator]
    health = _freeze_health_once_consuming(run)  # its lag cannot drain
    try:
        _post_all(run, 4000, "left")
        run.proc.send_signal(signal.SIGTERM)
        run.wait_for_line(r"drain incomplete", timeout=30)
    finally:
        os.kill(health, signal.SIGCONT)
    assert run.exit_code(timeout=60) == 1
    assert re.search(r"draining: [\d,]+ messages behind in 1 group\b", run.output), run.output
    took = float(re.findall(r"drain incomplete after ([\d.]+) s", run.output)[0])
    assert took < 15, run.output  # the 3 s timeout, plus at most the probe grace and load
    assert "not drained: group health, topic usage.events.v1: 4,000 messages" in run.output
    assert "not drained: group playbooks" not in run.output  # it caught up


async def test_a_broker_that_never_answers_cannot_hold_the_drain_past_its_bound(
    tmp_path: Path,
) -> None:
    """The lag probe's calls are bounded by the drain's deadline plus a grace: a broker
    that accepts connections and never answers gets a report, not a hung stop."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    settings = BaseServiceSettings(_env_file=None, UPTAKE_DATA_DIR=str(tmp_path))  # type: ignore[call-arg]
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    system = System(
        settings=settings,
        processes={"health": sleeper},  # type: ignore[dict-item]
        env={"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"},
    )
    said: list[str] = []
    started = time.monotonic()
    try:
        drained = await drain_system(system, timeout=1, say=said.append)
    finally:
        sleeper.kill()
        sleeper.wait()
        silent.close()
    took = time.monotonic() - started
    assert drained is False
    assert took < 1 + PROBE_GRACE + 3, said
    assert "draining: the broker did not answer the lag probe in time" in said
    assert any("what is left could not be measured" in line for line in said), said
