"""The ``uptake`` command: tokens, migrations, and ``run`` starting and stopping it all."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from shared.auth import verify_token
from shared.broker import free_port
from shared.cli import app
from shared.services import available_services
from tests.support import TEST_SECRET, wait_ready

runner = CliRunner()


def test_token_create_prints_a_scoped_token() -> None:
    result = runner.invoke(
        app,
        ["token", "create", "--scope", "read", "--scope", "ingest"],
        env={"UPTAKE_SECRET": TEST_SECRET},
    )
    assert result.exit_code == 0, result.output
    claims = verify_token(TEST_SECRET, result.output.strip())
    assert claims.scopes == {"read", "ingest"}


def test_token_create_refuses_unknown_scope() -> None:
    result = runner.invoke(
        app, ["token", "create", "--scope", "root"], env={"UPTAKE_SECRET": TEST_SECRET}
    )
    assert result.exit_code != 0
    assert "unknown scopes" in result.output


def test_migrate_creates_every_service_database(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["migrate"], env={"UPTAKE_DATA_DIR": str(tmp_path), "UPTAKE_SECRET": TEST_SECRET}
    )
    assert result.exit_code == 0, result.output
    for svc in available_services():
        assert (tmp_path / f"{svc.name}.db").stat().st_size > 0
        assert f"{svc.name}: migrated" in result.output


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_run_starts_broker_and_services_and_stops_them_on_sigterm(tmp_path: Path) -> None:
    broker_port = free_port()
    ports = {s.name: free_port() for s in available_services()}
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(
        {
            "UPTAKE_DATA_DIR": str(tmp_path),
            "UPTAKE_SECRET": TEST_SECRET,
            "UPTAKE_BROKER_PORT": str(broker_port),
            **{f"{n.upper()}_PORT": str(p) for n, p in ports.items()},
        }
    )
    proc = subprocess.Popen([sys.executable, "-m", "shared.cli", "run"], env=env)
    try:
        for port in ports.values():
            wait_ready(f"http://127.0.0.1:{port}", proc, timeout=90)
        assert _port_open(broker_port)
        assert httpx.get(f"http://127.0.0.1:{ports['ingest']}/openapi.json").status_code == 200
        _assert_second_run_refused(env, port=broker_port, holder=f"pid {proc.pid}: uptake run")
        # "make demo" beside a running instance is refused the same way.
        _assert_second_run_refused(
            env, port=broker_port, holder=f"pid {proc.pid}: uptake run", command="demo"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0
    deadline = time.monotonic() + 5
    while _port_open(broker_port) or any(_port_open(p) for p in ports.values()):
        assert time.monotonic() < deadline, "something uptake run started is still listening"
        time.sleep(0.1)


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
    assert elapsed < 5, f"the second run took {elapsed:.1f}s to refuse"
    err = second.stderr.decode()
    assert f"port {port} is in use (" in err, err
    assert holder in err, err
    assert "is Uptake already running?" in err
    assert "Running." not in second.stdout.decode()


def test_run_refuses_a_taken_service_port_before_starting_anything(tmp_path: Path) -> None:
    broker_port = free_port()
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
        env.update(
            {
                "UPTAKE_DATA_DIR": str(tmp_path / "data"),
                "UPTAKE_SECRET": TEST_SECRET,
                "UPTAKE_BROKER_PORT": str(broker_port),
                **{f"{s.name.upper()}_PORT": str(free_port()) for s in available_services()},
                "PLAYBOOKS_PORT": str(taken),
            }
        )
        result = subprocess.run(
            [sys.executable, "-m", "shared.cli", "run"], env=env, capture_output=True, timeout=30
        )
    assert result.returncode == 2
    err = result.stderr.decode()
    assert f"port {taken} is in use (pid {os.getpid()}: " in err, err
    assert "set PLAYBOOKS_PORT to a free port" in err
    assert not _port_open(broker_port), "the broker was started although a port was taken"
    assert not (tmp_path / "data").exists(), "the data dir was touched before the check"
