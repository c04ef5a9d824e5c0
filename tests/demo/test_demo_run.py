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

import yaml

from demo.population import make_population
from shared.broker import free_port
from shared.services import available_services
from tests.support import TEST_SECRET

DEFAULT_CONFIG = Path(__file__).parents[2] / "services" / "health" / "default_config.yaml"


def _demo_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(
        {
            "UPTAKE_DATA_DIR": str(data_dir),
            "UPTAKE_SECRET": TEST_SECRET,
            "UPTAKE_BROKER_PORT": str(free_port()),
            "COLUMNS": "200",  # rich wraps tables to the terminal's width
            # a third of the default: the import posts every account's days without pause,
            # so 10 s after its last backdated event an account's history is whole
            "HEALTH_SETTLE_SECONDS": "10",
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


def test_demo_ctrl_c_mid_import_then_again_replays_everything_and_alerts_only_the_silent(
    tmp_path: Path,
) -> None:
    """A newcomer's demo: Ctrl-C during the import stops everything cleanly, with every
    rule on; run again on the same data, it replays the whole history (what the first run
    stored counts once) and prints what came out, and no steady account was ever alerted,
    not even for a moment after the restart."""
    today = datetime.now(UTC).date()
    paused = _paused_by_an_older_demo(tmp_path)
    args = ("--accounts", "40", "--days", "60")

    first = _demo(tmp_path, *args)
    assert first.stdout is not None
    deadline = time.monotonic() + 120
    lines = []
    for line in first.stdout:
        lines.append(line)
        if "Replaying" in line:
            break
        assert time.monotonic() < deadline, "".join(lines)
    # the rules an interrupted older demo paused went back as they were, before the import
    assert _rules_enabled(tmp_path) and all(_rules_enabled(tmp_path).values())
    assert not (tmp_path / "demo-paused-rules.json").exists()
    time.sleep(0.1)  # mid-import: the whole import takes under a second on a quiet machine
    first.send_signal(signal.SIGINT)
    rest, _ = first.communicate(timeout=90)
    out = "".join(lines) + rest
    assert first.returncode == 0, out
    assert "Traceback" not in out, out
    assert re.search(r"drained in [\d.]+ s", out), out  # not cut short by the drain timeout
    assert not re.search(r"sent [\d,]+ calls in", out), "the import had finished:\n" + out
    assert "paused by an interrupted demo are back on" in out
    assert out.index("back on") < out.index("Replaying")
    assert _rule_names(tmp_path)[paused] == "Inactive account (as it was)"
    assert all(_rules_enabled(tmp_path).values())

    again = _demo(tmp_path, *args, "--exit-after")
    out, _ = again.communicate(timeout=400)
    assert again.returncode == 0, out
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
    # the rules stayed on through both imports, and neither the half import nor the
    # restart opened a transient alert: the steady accounts were never "inactive"
    assert all(_rules_enabled(tmp_path).values())
    population = make_population(40, today=today)
    steady = {a.account_id for a in population if a.persona == "steady"}
    silent = {a.account_id for a in population if a.persona == "silent"}
    alerts = _alerts(tmp_path)
    assert not [a for a in alerts if a[0] in steady and a[1] == "inactivity"], alerts
    assert not [a for a in alerts if a[0] in steady and a[2] == "resolved"], alerts
    assert silent <= {a[0] for a in alerts if a[1] == "inactivity" and a[2] != "resolved"}


def _paused_by_an_older_demo(data_dir: Path) -> str:
    """Demos before alerts judged settled data switched the rules off for the import and
    kept them on disk; one interrupted back then left them off, and the next demo puts
    them back as they were (here: a renamed rule, so the restore shows). Returns its id."""
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    rule = next(r for r in config["alert_rules"] if r["id"] == "inactivity")
    rule = {**rule, "name": "Inactive account (as it was)", "enabled": True}
    (data_dir / "demo-paused-rules.json").write_text(json.dumps([rule]))
    return str(rule["id"])


def _rule_names(data_dir: Path) -> dict[str, str]:
    with sqlite3.connect(data_dir / "health.db") as db:
        return dict(db.execute("SELECT id, name FROM alert_rules"))
