"""``uptake demo`` as a newcomer runs it: a small population end to end, then Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from demo.population import make_population
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


def _alerts(data_dir: Path) -> list[tuple[str, str, str]]:
    """(account, rule type, status) of every alert health ever opened or deferred."""
    with sqlite3.connect(data_dir / "health.db") as db:
        return list(db.execute("SELECT account_id, rule_type, status FROM alerts"))


def test_demo_replays_history_with_every_rule_on_and_prints_what_came_out(
    tmp_path: Path,
) -> None:
    today = datetime.now(UTC).date()
    proc = _demo(tmp_path, "--accounts", "40", "--days", "60", "--exit-after")
    out, _ = proc.communicate(timeout=400)
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
    sent = re.search(r"Emails sent: (\d+) to (\d+) contacts", out)
    assert sent is not None, out
    assert int(sent[1]) == len(emails) and 0 < int(sent[2]) <= int(sent[1])
    # the rules stayed on through the import, and the history opened no transient
    # alert: the steady accounts were never "inactive", not even for a moment
    assert all(_rules_enabled(tmp_path).values())
    population = make_population(40, today=today)
    steady = {a.account_id for a in population if a.persona == "steady"}
    silent = {a.account_id for a in population if a.persona == "silent"}
    alerts = _alerts(tmp_path)
    assert not [a for a in alerts if a[0] in steady and a[1] == "inactivity"], alerts
    assert not [a for a in alerts if a[0] in steady and a[2] == "resolved"], alerts
    assert silent <= {a[0] for a in alerts if a[1] == "inactivity" and a[2] != "resolved"}


def test_rules_an_older_interrupted_demo_paused_are_switched_back_on(tmp_path: Path) -> None:
    """Demos before alerts judged settled data switched the rules off for the import and
    kept them on disk; one interrupted back then left them off. The next demo puts them back."""
    first = _demo(tmp_path, "--accounts", "5", "--days", "10", "--exit-after")
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out
    with sqlite3.connect(tmp_path / "health.db") as db:
        rules = [
            {"id": i, "type": t, "name": n, "severity": s, "cooldown_days": c, "params": p}
            for i, t, n, s, c, p in db.execute(
                "SELECT id, type, name, severity, cooldown_days, params FROM alert_rules"
            )
        ]
        db.execute("UPDATE alert_rules SET enabled = 0")
    for rule in rules:
        rule["params"] = json.loads(rule["params"])
        rule["enabled"] = True
    (tmp_path / "demo-paused-rules.json").write_text(json.dumps(rules))
    proc = _demo(tmp_path, "--accounts", "5", "--days", "10", "--exit-after")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "paused by an interrupted demo are back on" in out
    assert _rules_enabled(tmp_path) and all(_rules_enabled(tmp_path).values())
    assert not (tmp_path / "demo-paused-rules.json").exists()


def test_ctrl_c_during_the_import_stops_everything_with_alerting_on(tmp_path: Path) -> None:
    proc = _demo(tmp_path, "--accounts", "300", "--days", "90")
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "Replaying" in line:
            break
        assert time.monotonic() < deadline, "".join(lines)
    time.sleep(2)  # mid-replay: every rule is on, nothing was paused
    assert _rules_enabled(tmp_path) and all(_rules_enabled(tmp_path).values())
    assert not (tmp_path / "demo-paused-rules.json").exists()
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, "".join(lines) + rest
    assert all(_rules_enabled(tmp_path).values())
