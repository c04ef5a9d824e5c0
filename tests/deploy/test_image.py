"""deploy/Dockerfile's shape (no Docker daemon needed) and the two scripts the image runs:
the entrypoint that picks the service and the health check Docker calls."""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY, PORTS, ROOT, SERVICE_NAMES

DOCKERFILE = (DEPLOY / "Dockerfile").read_text()
# Instructions with their continuation lines joined, spaces squeezed, comments dropped.
INSTRUCTIONS = [
    " ".join(line.split())
    for line in re.sub(r"\\\n", " ", DOCKERFILE).splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]


def index_of(prefix: str) -> int:
    matches = [i for i, line in enumerate(INSTRUCTIONS) if line.startswith(prefix)]
    assert len(matches) == 1, f"expected one `{prefix}` in deploy/Dockerfile, got {len(matches)}"
    return matches[0]


def test_base_image_and_pinned_uv() -> None:
    assert INSTRUCTIONS[0] == "FROM python:3.11-slim"
    makefile_uv = re.search(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert makefile_uv, "Makefile no longer pins UV_VERSION"
    uv = INSTRUCTIONS[index_of("COPY --from=ghcr.io/astral-sh/uv:")]
    assert uv.startswith(f"COPY --from=ghcr.io/astral-sh/uv:{makefile_uv.group(1)} ")


def test_dependencies_layer_comes_before_the_code() -> None:
    """Editing code must not reinstall dependencies: lock files, sync, then code, then project."""
    lock = index_of("COPY pyproject.toml uv.lock ")
    deps = index_of("RUN uv sync --frozen --no-dev --no-install-project")
    code = index_of("COPY shared ")
    project = index_of("RUN uv sync --frozen --no-dev &&")
    assert lock < deps < code < project
    assert index_of("COPY services ") > deps


def test_every_copied_path_exists_and_reaches_the_build_context() -> None:
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for line in INSTRUCTIONS:
        if not line.startswith("COPY ") or "--from=" in line:
            continue
        for source in line.split()[1:-1]:
            assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
            for pattern in ignored:
                assert not fnmatch.fnmatch(source, pattern), f"{source} is .dockerignored"
                assert not source.startswith(pattern.rstrip("/") + "/"), source


def test_runs_as_non_root_with_healthcheck_and_ports() -> None:
    user = INSTRUCTIONS[index_of("USER ")]
    uid = user.split()[1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root uid (runAsNonRoot)"
    assert index_of("USER ") > index_of("RUN uv sync --frozen --no-dev &&")
    healthcheck = INSTRUCTIONS[index_of("HEALTHCHECK ")]
    assert '"/app/deploy/healthcheck.py", "/healthz"' in healthcheck
    exposed = {int(p) for p in INSTRUCTIONS[index_of("EXPOSE ")].split()[1:]}
    assert exposed == set(PORTS.values())
    assert INSTRUCTIONS[index_of("ENTRYPOINT ")] == 'ENTRYPOINT ["/app/deploy/entrypoint.sh"]'


# The entrypoint --------------------------------------------------------------------------


@pytest.fixture
def fake_python(tmp_path: Path) -> Path:
    """A `python` that prints how it was called, so the entrypoint's choice is visible."""
    exe = tmp_path / "python"
    exe.write_text('#!/bin/sh\necho "python $* SERVICE=$SERVICE"\n')
    exe.chmod(0o755)
    return tmp_path


def entrypoint(bin_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(DEPLOY / "entrypoint.sh"), *args],
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}", **env},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


@pytest.mark.parametrize("svc", SERVICE_NAMES)
def test_entrypoint_runs_the_service_named_by_env_or_argument(fake_python: Path, svc: str) -> None:
    by_env = entrypoint(fake_python, SERVICE=svc)
    by_arg = entrypoint(fake_python, svc)
    for result in (by_env, by_arg):
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"python -m services.{svc} SERVICE={svc}"


def test_entrypoint_runs_other_commands_as_given(fake_python: Path) -> None:
    result = entrypoint(fake_python, "echo", "uptake", "migrate")
    assert (result.returncode, result.stdout) == (0, "uptake migrate\n")


def test_entrypoint_refuses_to_guess(fake_python: Path) -> None:
    result = entrypoint(fake_python)
    assert result.returncode == 64
    assert "set SERVICE" in result.stderr


# The health check ------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = {"/healthz": 200, "/readyz": 503}.get(self.path, 404)
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def healthcheck(*args: str, **env: str) -> int:
    result = subprocess.run(
        [sys.executable, str(DEPLOY / "healthcheck.py"), *args],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        timeout=10,
        check=False,
    )
    return result.returncode


def test_healthcheck_follows_the_services_answer(http_port: int) -> None:
    env = {"SERVICE": "playbooks", "PLAYBOOKS_PORT": str(http_port)}
    assert healthcheck("/healthz", **env) == 0
    assert healthcheck(**env) == 0  # /healthz by default
    assert healthcheck("/readyz", **env) == 1  # 503: not ready
    # Another service's port setting does not redirect the check.
    other = {"SERVICE": "notify", "NOTIFY_PORT": "1", "PLAYBOOKS_PORT": str(http_port)}
    assert healthcheck("/healthz", **other) == 1


def test_healthcheck_fails_when_nothing_listens(http_port: int) -> None:
    assert healthcheck(SERVICE="ingest", INGEST_PORT="1") == 1
    assert healthcheck(SERVICE="nope") != 0
