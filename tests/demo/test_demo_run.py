"""``uptake demo`` as a newcomer runs it: a small population end to end, then Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from shared.broker import free_port
from shared.services import available_services
from tests.support import TEST_SECRET


def _demo_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(
        {
            "UPTAKE_DATA_DIR": str(data_dir),
            "UPTAKE_SECRET": TEST_SECRET,
            "UPTAKE_BROKER_PORT": str(free_port()),
            "COLUMNS": "200",  # rich wraps tables to the terminal's width
            **{f"{s.name.upper()}_PORT": str(free_port()) for s in available_services()},
        }
    )
    return env


def _demo(data_dir: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "demo", *args],
        env=_demo_env(data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _rules_enabled(data_dir: Path) -> dict[str, bool]:
    with sqlite3.connect(data_dir / "health.db") as db:
        return {rule: bool(on) for rule, on in db.execute("SELECT id, enabled FROM alert_rules")}


def test_demo_replays_history_and_prints_what_came_out(tmp_path: Path) -> None:
    proc = _demo(tmp_path, "--accounts", "40", "--days", "60", "--exit-after")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    for heading in (
        "Accounts by band",
        "Riskiest accounts",
        "Open alerts by rule",
        "Task groups per CSM",
        "Messages sent",
        "Dev outbox:",
    ):
        assert heading in out, f"{heading!r} missing from:\n{out}"
    assert out.count("/docs") >= 8  # printed at start and in the summary, per service
    assert "0 rejected" in out
    outbox = tmp_path / "outbox"
    emails, slacks = list(outbox.glob("*.eml")), list(outbox.glob("*.json"))
    assert emails and slacks, out
    assert all("List-Unsubscribe:" in e.read_text() for e in emails)
    # alerting is back on after the import, and nothing is left paused
    assert all(_rules_enabled(tmp_path).values())
    assert not (tmp_path / "demo-paused-rules.json").exists()


def test_ctrl_c_during_the_import_stops_everything_and_leaves_alerting_on(
    tmp_path: Path,
) -> None:
    proc = _demo(tmp_path, "--accounts", "300", "--days", "90")
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "Replaying" in line:
            break
        assert time.monotonic() < deadline, "".join(lines)
    time.sleep(2)  # mid-replay: the rules are paused now
    paused = json.loads((tmp_path / "demo-paused-rules.json").read_text())
    assert paused and not any(_rules_enabled(tmp_path).values())
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, "".join(lines) + rest
    assert _rules_enabled(tmp_path) == {rule["id"]: rule["enabled"] for rule in paused}
    assert not (tmp_path / "demo-paused-rules.json").exists()
