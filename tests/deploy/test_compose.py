"""docker-compose.yml as docker-compose 1.29 resolves it: the whole system on Apache Kafka
(KRaft), PostgreSQL 16 and Mailpit, in the right order, with settings the code accepts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from shared.settings import BaseServiceSettings
from shared.topics import ALL as TOPICS
from shared.topics import COMPACTED, dlq
from tests.deploy.conftest import (
    DB_SERVICE_NAMES,
    DEPLOY,
    PARTITIONS,
    PORTS,
    ROOT,
    SERVICE_NAMES,
    created_topics,
    fake_kafka_topics,
    known_settings,
    run_script,
    settings_class,
)

COMPLETED = {"condition": "service_completed_successfully"}
HEALTHY = {"condition": "service_healthy"}


def settings_from(
    env: dict[str, Any], cls: type[BaseServiceSettings] = BaseServiceSettings
) -> BaseServiceSettings:
    """The settings a container gets from this environment (unset keys are left out)."""
    return cls(_env_file=None, **{k: v for k, v in env.items() if v is not None})


def test_infrastructure_images(compose_config: Any) -> None:
    services = compose_config["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["postgres"]["image"].split(":")[1].startswith("16")
    assert services["mailpit"]["image"].startswith("axllent/mailpit:")
    kafka = services["kafka"]["environment"]
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}  # KRaft
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    ports = {(p["published"], p["target"]) for p in services["mailpit"]["ports"]}
    assert ports == {(1025, 1025), (8025, 8025)}
    for name in ("kafka", "postgres", "mailpit"):
        assert services[name]["healthcheck"]["test"], f"{name} needs a healthcheck"


@pytest.mark.parametrize("svc", SERVICE_NAMES)
def test_service_built_from_the_one_dockerfile(compose_config: Any, svc: str) -> None:
    service = compose_config["services"][svc]
    assert service["build"]["dockerfile"] == "deploy/Dockerfile"
    assert Path(service["build"]["context"]) == ROOT
    assert service["image"] == compose_config["services"]["migrate"]["image"]
    assert service["environment"]["SERVICE"] == svc  # the entrypoint runs services.<svc>
    assert [(p["published"], p["target"]) for p in service["ports"]] == [(PORTS[svc],) * 2]
    assert service["healthcheck"]["test"] == [
        "CMD",
        "python",
        "/app/deploy/healthcheck.py",
        "/readyz",
    ]


@pytest.mark.parametrize("svc", DB_SERVICE_NAMES)
def test_service_starts_after_topics_and_migrations(compose_config: Any, svc: str) -> None:
    depends = compose_config["services"][svc]["depends_on"]
    assert depends["kafka-init"] == COMPLETED
    assert depends["migrate"] == COMPLETED
    services = compose_config["services"]
    assert services["kafka-init"]["depends_on"] == {"kafka": HEALTHY}
    assert services["migrate"]["depends_on"] == {"postgres": HEALTHY}


@pytest.mark.parametrize("svc", SERVICE_NAMES)
def test_service_environment_is_accepted_by_the_settings(compose_config: Any, svc: str) -> None:
    env = compose_config["services"][svc]["environment"]
    assert set(env) - known_settings() == set(), "unknown setting names (typo?)"
    # The service's own settings class: raises on a short or development secret.
    settings = settings_from(env, settings_class(svc))
    assert settings.environment == "production"
    assert settings.auto_migrate is False
    assert settings.host == "0.0.0.0"
    assert settings.kafka_bootstrap_servers == "kafka:9092"
    assert settings.kafka_partitions == PARTITIONS
    assert settings.port(svc) == PORTS[svc]
    assert env["PUBLIC_BASE_URL"]
    if svc not in DB_SERVICE_NAMES:  # the console: no database, only the four APIs
        assert {k for k in env if k.endswith("_DATABASE_URL")} == set()
        return
    assert {k for k in env if k.endswith("_DATABASE_URL")} == {f"{svc.upper()}_DATABASE_URL"}
    url = urlsplit(settings.database_url(svc))
    assert url.scheme == "postgresql+asyncpg"
    assert (url.hostname, url.port, url.path, url.username) == ("postgres", 5432, f"/{svc}", svc)


def test_database_urls_match_the_roles_postgres_creates(compose_config: Any) -> None:
    services = compose_config["services"]
    postgres = services["postgres"]
    # `config` prints volumes as "source:target:mode".
    [mount] = [v for v in postgres["volumes"] if ":/docker-entrypoint-initdb.d/" in v]
    script = Path(mount.split(":")[0])
    assert script == DEPLOY / "postgres" / "init-databases.sh"
    # Healthy only once the init script ran: the first-start server has no TCP listener.
    assert "-h 127.0.0.1" in postgres["healthcheck"]["test"][1]
    loop = re.search(r"^for service in (.+); do$", script.read_text(), re.M)
    assert loop and loop.group(1).split() == DB_SERVICE_NAMES
    for svc in DB_SERVICE_NAMES:
        for client in (svc, "migrate"):
            url = urlsplit(services[client]["environment"][f"{svc.upper()}_DATABASE_URL"])
            assert url.password == postgres["environment"][f"{svc.upper()}_DB_PASSWORD"], client


def test_notify_sends_through_mailpit(compose_config: Any) -> None:
    notify = compose_config["services"]["notify"]
    env = notify["environment"]
    assert (env["SMTP_HOST"], env["SMTP_PORT"]) == ("mailpit", "1025")
    assert env["SMTP_STARTTLS"] == "false"
    settings = settings_from(env, settings_class("notify"))
    if settings_class("notify") is not BaseServiceSettings:  # notify's own settings parse them
        assert getattr(settings, "smtp_host", None) == "mailpit"
        assert getattr(settings, "smtp_port", None) == 1025
    assert notify["depends_on"]["mailpit"] == HEALTHY


def test_migrate_is_one_shot_uptake_migrate_on_every_database(compose_config: Any) -> None:
    migrate = compose_config["services"]["migrate"]
    assert migrate["command"] == ["uptake", "migrate"]
    assert migrate["build"]["dockerfile"] == "deploy/Dockerfile"
    assert migrate["restart"] == "no"
    settings = settings_from(migrate["environment"])
    for svc in DB_SERVICE_NAMES:
        assert settings.database_url(svc).startswith("postgresql+asyncpg://"), svc


def test_kafka_init_creates_every_topic_and_dead_letter_topic(
    compose_config: Any, tmp_path: Path
) -> None:
    init = compose_config["services"]["kafka-init"]
    assert init["image"] == compose_config["services"]["kafka"]["image"]
    assert init["entrypoint"][0] == "/bin/bash"
    tool, log = fake_kafka_topics(tmp_path)
    # `config` prints `$$` escapes as written; the container's shell sees `$`.
    script = init["command"][0].replace("$$", "$")
    result = run_script(script.replace("/opt/kafka/bin/kafka-topics.sh", str(tool)), {})
    assert result.returncode == 0, result.stderr
    topics = created_topics(log)
    assert set(topics) == {*TOPICS, *(dlq(t) for t in TOPICS), *COMPACTED}
    for name in COMPACTED:  # read whole by every service: the latest record per key
        assert topics[name]["config"] == "cleanup.policy=compact", name
    for name, opts in topics.items():
        assert opts["partitions"] == str(PARTITIONS), name
        assert opts["bootstrap-server"] == "kafka:9092", name
    creates = [line for line in log.read_text().splitlines() if "--create" in line]
    assert all("--if-not-exists" in line for line in creates)


def test_console_reads_the_four_apis_by_their_compose_names(compose_config: Any) -> None:
    """The console starts once the four services are healthy and calls them by name."""
    console = compose_config["services"]["console"]
    assert set(console["depends_on"]) == set(DB_SERVICE_NAMES)
    assert all(d == HEALTHY for d in console["depends_on"].values())
    settings = settings_from(console["environment"], settings_class("console"))
    for svc in DB_SERVICE_NAMES:
        assert settings.api_url(svc) == f"http://{svc}:{PORTS[svc]}"  # type: ignore[attr-defined]
