"""The ``uptake`` command: tokens, migrations, and ``run`` starting and stopping it all."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from shared.auth import key_id, verify_token
from shared.broker import free_port
from shared.cli import app
from shared.services import available_services, database_services
from tests.support import TEST_SECRET, port_open

runner = CliRunner()


def test_token_create_prints_a_scoped_token(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["token", "create", "--scope", "read", "--scope", "ingest"],
        env={"UPTAKE_SECRET": TEST_SECRET, "UPTAKE_DATA_DIR": str(tmp_path)},
    )
    assert result.exit_code == 0, result.output
    claims = verify_token(TEST_SECRET, result.stdout.strip())
    assert claims.scopes == {"read", "ingest"}


def test_token_create_refuses_unknown_scope(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["token", "create", "--scope", "root"],
        env={"UPTAKE_SECRET": TEST_SECRET, "UPTAKE_DATA_DIR": str(tmp_path)},
    )
    assert result.exit_code != 0
    assert "unknown scopes" in result.output


def test_migrate_creates_every_service_database(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["migrate"], env={"UPTAKE_DATA_DIR": str(tmp_path), "UPTAKE_SECRET": TEST_SECRET}
    )
    assert result.exit_code == 0, result.output
    for svc in database_services():
        assert (tmp_path / f"{svc.name}.db").stat().st_size > 0
        assert f"{svc.name}: migrated" in result.output


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
    assert not port_open(broker_port), "the broker was started although a port was taken"
    assert not (tmp_path / "data").exists(), "the data dir was touched before the check"


def test_token_create_records_it_and_list_shows_dates(tmp_path: Path) -> None:
    env = {"UPTAKE_SECRET": TEST_SECRET, "UPTAKE_DATA_DIR": str(tmp_path)}
    made = {}
    for args in (["--scope", "read", "--ttl", "2h"], ["--scope", "ingest"], ["--scope", "admin"]):
        result = runner.invoke(app, ["token", "create", *args, "--subject", args[1]], env=env)
        assert result.exit_code == 0, result.output
        claims = verify_token(TEST_SECRET, result.stdout.strip())
        assert f"token {claims.token_id} for {args[1]!r}" in result.stderr
        made[args[1]] = claims
    assert made["read"].expires_at - made["read"].issued_at == 7200  # type: ignore[operator]
    assert made["ingest"].expires_at is None
    assert made["admin"].expires_at - made["admin"].issued_at == 90 * 86400  # type: ignore[operator]

    result = runner.invoke(app, ["token", "list", "--plain"], env=env)
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split("\t") == [
        "ID", "SUBJECT", "SCOPES", "STATUS", "CREATED", "EXPIRES", "LAST USED", "ORIGIN", "KEY"
    ]  # fmt: skip
    by_subject = {row.split("\t")[1]: row.split("\t") for row in rows}
    assert set(by_subject) == {"read", "ingest", "admin"}
    _, _, scopes, status, created, expires, last_used, origin, key = by_subject["ingest"]
    assert key == key_id(TEST_SECRET)
    assert (scopes, status, expires, last_used, origin) == ("ingest", "active", "never", "-", "cli")
    assert created.endswith("Z")
    assert by_subject["read"][0] == made["read"].token_id
    assert by_subject["read"][5] != "never"
    table = runner.invoke(app, ["token", "list"], env=env)
    assert table.exit_code == 0 and made["admin"].token_id in table.stdout


def test_token_create_refuses_a_bad_ttl(tmp_path: Path) -> None:
    env = {"UPTAKE_SECRET": TEST_SECRET, "UPTAKE_DATA_DIR": str(tmp_path)}
    result = runner.invoke(app, ["token", "create", "--scope", "read", "--ttl", "soon"], env=env)
    assert result.exit_code != 0
    assert "ttl must look like" in result.output
