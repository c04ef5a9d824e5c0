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
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0
    deadline = time.monotonic() + 5
    while _port_open(broker_port) or any(_port_open(p) for p in ports.values()):
        assert time.monotonic() < deadline, "something uptake run started is still listening"
        time.sleep(0.1)
