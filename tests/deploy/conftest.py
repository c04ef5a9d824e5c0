"""What the deployment tests share: paths, the services and their ports, YAML loading."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.services import SERVICES
from shared.settings import BaseServiceSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE_FILE = ROOT / "docker-compose.yml"

SERVICE_NAMES = [s.name for s in SERVICES]
# The services with a database of their own (the console has none: it uses the APIs).
DB_SERVICE_NAMES = [s.name for s in SERVICES if s.has_database]
# The ports the code listens on by default (shared/settings.py), not a copy of them.
PORTS = {name: BaseServiceSettings.model_fields[f"{name}_port"].default for name in SERVICE_NAMES}
# What the embedded stack and every deployment must give the consumers (DESIGN.md).
PARTITIONS = BaseServiceSettings.model_fields["kafka_partitions"].default


def settings_class(svc: str) -> type[BaseServiceSettings]:
    """The service's own settings class once it has one, else the shared base."""
    module_name = f"services.{svc}.settings"
    if importlib.util.find_spec(module_name) is None:
        return BaseServiceSettings
    module = importlib.import_module(module_name)
    found = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, BaseServiceSettings)
        and obj is not BaseServiceSettings
        and obj.__module__ == module_name
    ]
    return found[0] if len(found) == 1 else BaseServiceSettings


def known_settings() -> set[str]:
    """Every environment name Uptake reads: the settings classes' aliases and DESIGN.md's."""
    aliases = {
        f.alias
        for cls in {BaseServiceSettings, *(settings_class(s) for s in SERVICE_NAMES)}
        for f in cls.model_fields.values()
        if f.alias
    }
    design = {
        "SMTP_HOST",
        "SMTP_PORT",
        "SMTP_USERNAME",
        "SMTP_PASSWORD",
        "SMTP_STARTTLS",
        "EMAIL_FROM",
        "SLACK_WEBHOOK_URL",
        "SLACK_BOT_TOKEN",
        "SLACK_API_BASE",
    }
    return aliases | design | {"SERVICE"}  # SERVICE: the image's entrypoint and health check


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def fake_kafka_topics(tmp_path: Path) -> tuple[Path, Path]:
    """A stand-in for kafka-topics.sh that logs its arguments, one call per line."""
    log = tmp_path / "calls.log"
    tool = tmp_path / "kafka-topics.sh"
    tool.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\n')
    tool.chmod(0o755)
    return tool, log


def created_topics(calls_log: Path) -> dict[str, dict[str, str]]:
    """topic -> its options, from the logged ``--create`` calls."""
    topics: dict[str, dict[str, str]] = {}
    for line in calls_log.read_text().splitlines():
        if "--create" not in line:
            continue
        opts = dict(re.findall(r"--([a-z-]+) (\S+)", line))
        topics[opts["topic"]] = opts
    return topics


def run_script(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash")
    assert bash, "bash is needed to run the topic scripts"
    return subprocess.run(
        [bash, "-ec", script],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


@pytest.fixture(scope="session")
def docker_compose() -> str:
    """docker-compose must be here: a missing validator must fail loudly, never skip."""
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail(
            "docker-compose is not on PATH: install Debian's docker-compose (1.29) to check "
            "docker-compose.yml (`apt-get install docker-compose`)",
            pytrace=False,
        )
    return exe


@pytest.fixture(scope="session")
def compose_config(docker_compose: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``docker-compose config`` output: the file as 1.29 resolves it, with its defaults."""
    # A clean environment, so only the file's own defaults apply (no .env, no overrides).
    workdir = tmp_path_factory.mktemp("compose")
    empty_env_file = workdir / "empty.env"
    empty_env_file.write_text("")
    env = {"PATH": os.environ["PATH"], "HOME": str(workdir)}
    result = subprocess.run(
        [
            docker_compose,
            "--project-directory",
            str(ROOT),
            "--env-file",
            str(empty_env_file),
            "-f",
            str(COMPOSE_FILE),
            "config",
        ],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    return yaml.safe_load(result.stdout)
