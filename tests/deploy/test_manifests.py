"""docker-compose.yml under docker-compose 1.29, and deploy/k8s under kubernetes-validate
(offline: it ships its schemas) plus what a schema cannot say: probes, ports, commands,
resources, graceful shutdown, autoscaling bounds, disruption budgets."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from shared.kafka.consumer import STOP_TIMEOUT_SECONDS as CONSUMER_STOP_TIMEOUT
from shared.service import GRACEFUL_SHUTDOWN_SECONDS
from shared.services import available_services
from shared.settings import BaseServiceSettings
from shared.topics import ALL as TOPICS
from shared.topics import COMPACTED, CONSUMED_BY, dlq
from tests.deploy.conftest import (
    COMPOSE_FILE,
    DB_SERVICE_NAMES,
    DEPLOY,
    K8S,
    PARTITIONS,
    PORTS,
    ROOT,
    SERVICE_NAMES,
    created_topics,
    fake_kafka_topics,
    known_settings,
    load_docs,
    run_script,
    settings_class,
)

# The oldest Kubernetes we support and the newest schema the pinned validator ships.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())
IMAGE = "uptake"  # the name kustomization.yaml rewrites to the published image
VALID_SECRET = "x" * 40

KUSTOMIZATION = load_docs(K8S / "kustomization.yaml")[0]
MANIFEST_FILES = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
DOCS = [(path, doc) for path in MANIFEST_FILES for doc in load_docs(path)]


def find(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in DOCS if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind} {name!r} in deploy/k8s, got {len(found)}"
    return found[0]


def container(doc: dict[str, Any]) -> dict[str, Any]:
    containers = doc["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{doc['metadata']['name']}: one container per pod"
    result: dict[str, Any] = containers[0]
    return result


# docker-compose ------------------------------------------------------------------------


def test_compose_file_passes_docker_compose_config(docker_compose: str) -> None:
    result = subprocess.run(
        [docker_compose, "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"`docker-compose config -q` rejected the file:\n{result.stderr}"


def test_docker_compose_really_validates(docker_compose: str, tmp_path: Path) -> None:
    """The check above means something: 1.29 rejects a dependency condition it doesn't know."""
    broken = COMPOSE_FILE.read_text().replace(
        "condition: service_completed_successfully", "condition: service_finished", 1
    )
    (tmp_path / "docker-compose.yml").write_text(broken)
    result = subprocess.run(
        [docker_compose, "-f", str(tmp_path / "docker-compose.yml"), "config", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "service_finished" in result.stderr


# Kubernetes: schema ---------------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    assert sorted(KUSTOMIZATION["resources"]) == sorted(p.name for p in MANIFEST_FILES)
    assert KUSTOMIZATION["namespace"] == "uptake"
    assert [i["name"] for i in KUSTOMIZATION["images"]] == [IMAGE]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    "doc",
    [d for _, d in DOCS],
    ids=[f"{p.name}:{d['kind']}/{d['metadata']['name']}" for p, d in DOCS],
)
def test_manifest_is_valid_kubernetes(doc: dict[str, Any], version: str) -> None:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"invalid for Kubernetes {version} at {list(exc.path)}: {exc.message}")


def test_strict_validation_rejects_a_typo() -> None:
    """kubernetes-validate is strict: a misspelt probe would not pass silently."""
    broken = copy.deepcopy(find("Deployment", "uptake-ingest"))
    probe = container(broken).pop("livenessProbe")
    container(broken)["livenessprobe"] = probe
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_kustomize_renders_the_published_image_in_one_namespace() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: `kubectl kustomize deploy/k8s` not checked")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    rendered = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert len(rendered) == len(DOCS)
    image = KUSTOMIZATION["images"][0]
    for doc in rendered:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "uptake", doc["metadata"]["name"]
        if doc["kind"] in ("Deployment", "Job") and doc["metadata"]["name"] != "uptake-topics":
            assert container(doc)["image"] == f"{image['newName']}:{image['newTag']}"
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[0], strict=True)


# Kubernetes: the four services ----------------------------------------------------------


@pytest.mark.parametrize("svc", SERVICE_NAMES)
def test_each_service_has_deployment_service_hpa_and_pdb(svc: str) -> None:
    for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
        find(kind, f"uptake-{svc}")


@pytest.mark.parametrize("svc", SERVICE_NAMES)
def test_deployment_runs_the_service_module_on_its_port(svc: str) -> None:
    c = container(find("Deployment", f"uptake-{svc}"))
    assert c["image"] == IMAGE
    assert c["command"] == ["python", "-m", f"services.{svc}"]
    assert [(p["name"], p["containerPort"]) for p in c["ports"]] == [("http", PORTS[svc])]
    env = {e["name"]: e for e in c["env"]}
    assert env["SERVICE"]["value"] == svc
    # Its own database URL and no other service's (the console: none at all).
    db_urls = {n for n in env if n.endswith("_DATABASE_URL")}
    if svc not in DB_SERVICE_NAMES:
        assert db_urls == set()
    else:
        assert db_urls == {f"{svc.upper()}_DATABASE_URL"}
        ref = env[f"{svc.upper()}_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert ref["key"] in find("Secret", ref["name"])["stringData"]
    sources = [next(iter(s.values()))["name"] for s in c["envFrom"]]
    assert sources == ["uptake-config", "uptake-secrets"]


@pytest.mark.parametrize("svc", [s.name for s in available_services()])
def test_the_module_the_deployment_runs_exists(svc: str) -> None:
    assert (ROOT / "services" / svc / "__main__.py").is_file()


@pytest.mark.parametrize("svc", SERVICE_NAMES)
def test_deployment_probes_resources_and_graceful_stop(svc: str) -> None:
    deployment = find("Deployment", f"uptake-{svc}")
    c = container(deployment)
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz")):
        assert c[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    for key in ("requests", "limits"):
        assert set(c["resources"][key]) == {"cpu", "memory"}, key
    # The startup probe must outlast the broker wait at startup (create_service_app: 60 s).
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60
    # Grace covers, one after the other, the preStop sleep, uvicorn finishing the requests
    # in hand (serve(): timeout_graceful_shutdown) and each consumer finishing and committing
    # its batch in hand (ConsumerRunner.stop), for the services that consume.
    assert (
        "timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS"
        in (ROOT / "shared/service.py").read_text()
    )
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    consumer_stop = CONSUMER_STOP_TIMEOUT if svc in CONSUMED_BY else 0
    stop = int(pre_stop[1]) + GRACEFUL_SHUTDOWN_SECONDS + consumer_stop
    assert stop < grace <= 60
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize("svc", SERVICE_NAMES)
def test_pods_run_as_the_images_non_root_user(svc: str) -> None:
    uid = re.search(r"^USER (\d+)", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert uid and int(uid.group(1)) != 0
    pod = find("Deployment", f"uptake-{svc}")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(uid.group(1))
    c = container(find("Deployment", f"uptake-{svc}"))
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    # The only writable places: /tmp and the data dir the settings point at.
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert mounts == {"/tmp", find("ConfigMap", "uptake-config")["data"]["UPTAKE_DATA_DIR"]}


@pytest.mark.parametrize("svc", SERVICE_NAMES)
def test_service_reaches_the_pods_on_the_service_port(svc: str) -> None:
    service = find("Service", f"uptake-{svc}")
    pod_labels = find("Deployment", f"uptake-{svc}")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [
        {"name": "http", "port": PORTS[svc], "targetPort": "http", "protocol": "TCP"}
    ]
    # The selector picks this service's pods only.
    for other in SERVICE_NAMES:
        if other != svc:
            labels = find("Deployment", f"uptake-{other}")["spec"]["template"]["metadata"]
            assert not service["spec"]["selector"].items() <= labels["labels"].items()


@pytest.mark.parametrize("svc", SERVICE_NAMES)
def test_autoscaler_and_disruption_budget(svc: str) -> None:
    hpa = find("HorizontalPodAutoscaler", f"uptake-{svc}")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": f"uptake-{svc}",
    }
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    partitions = int(find("ConfigMap", "uptake-config")["data"]["KAFKA_PARTITIONS"])
    if svc in ("health", "playbooks", "notify"):
        # A consumer group's replicas beyond the partition count would sit idle.
        assert hpa["spec"]["maxReplicas"] <= partitions
    pdb = find("PodDisruptionBudget", f"uptake-{svc}")
    pod_labels = find("Deployment", f"uptake-{svc}")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    # At the HPA's floor a drain may evict one pod and still leave one serving.
    assert hpa["spec"]["minReplicas"] - pdb["spec"]["maxUnavailable"] >= 1


# Kubernetes: settings, migrations, topics -----------------------------------------------


def test_config_and_secret_hold_only_settings_uptake_reads() -> None:
    keys = set(find("ConfigMap", "uptake-config")["data"])
    for name in ("uptake-secrets", "uptake-database-urls"):
        keys |= set(find("Secret", name)["stringData"])
    assert keys - known_settings() == set(), "unknown setting names (typo?)"
    config = find("ConfigMap", "uptake-config")["data"]
    assert int(config["KAFKA_PARTITIONS"]) == PARTITIONS
    urls = find("Secret", "uptake-database-urls")["stringData"]
    for svc in DB_SERVICE_NAMES:
        # What a pod gets, parsed by the service's own settings class.
        key = f"{svc.upper()}_DATABASE_URL"
        env = {**config, "UPTAKE_SECRET": VALID_SECRET, key: urls[key]}
        settings = settings_class(svc)(_env_file=None, **env)
        assert settings.environment == "production"
        assert settings.auto_migrate is False
        assert settings.host == "0.0.0.0"
        assert settings.database_url(svc) == urls[key]


def test_secrets_are_marked_placeholders_that_fail_safe() -> None:
    for name in ("uptake-secrets", "uptake-database-urls"):
        for key, value in find("Secret", name)["stringData"].items():
            assert "REPLACE-ME" in value, f"{name}.{key} looks like a real secret"
    placeholder = find("Secret", "uptake-secrets")["stringData"]["UPTAKE_SECRET"]
    config = find("ConfigMap", "uptake-config")["data"]
    with pytest.raises(ValidationError, match="UPTAKE_SECRET"):
        BaseServiceSettings(_env_file=None, **config, UPTAKE_SECRET=placeholder)
    urls = find("Secret", "uptake-database-urls")["stringData"]
    for svc in DB_SERVICE_NAMES:
        assert urls[f"{svc.upper()}_DATABASE_URL"].startswith("postgresql+asyncpg://")


def test_migrate_job_runs_uptake_migrate_with_every_database() -> None:
    job = find("Job", "uptake-migrate")
    c = container(job)
    assert c["image"] == IMAGE
    assert c["command"] == ["uptake", "migrate"]
    sources = {next(iter(s.values()))["name"] for s in c["envFrom"]}
    assert sources == {"uptake-config", "uptake-secrets", "uptake-database-urls"}
    urls = find("Secret", "uptake-database-urls")["stringData"]
    assert set(urls) == {f"{svc.upper()}_DATABASE_URL" for svc in DB_SERVICE_NAMES}
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_topics_job_creates_every_topic_and_dead_letter_topic(tmp_path: Path) -> None:
    c = container(find("Job", "uptake-topics"))
    tool, log = fake_kafka_topics(tmp_path)
    script = c["args"][0].replace("/opt/kafka/bin/kafka-topics.sh", str(tool))
    env = {e["name"]: e.get("value", "") for e in c["env"]}
    env["KAFKA_BOOTSTRAP_SERVERS"] = "kafka:9092"
    env["KAFKA_PARTITIONS"] = find("ConfigMap", "uptake-config")["data"]["KAFKA_PARTITIONS"]
    for e in c["env"]:
        if "valueFrom" in e:  # the partitions and brokers come from the shared ConfigMap
            assert e["valueFrom"]["configMapKeyRef"]["name"] == "uptake-config"
    result = run_script(script, env)
    assert result.returncode == 0, result.stderr
    topics = created_topics(log)
    assert set(topics) == {*TOPICS, *(dlq(t) for t in TOPICS), *COMPACTED}
    for name in COMPACTED:  # read whole by every service: the latest record per key
        assert topics[name]["config"] == "cleanup.policy=compact", name
    assert {t["partitions"] for t in topics.values()} == {str(PARTITIONS)}
    assert all("--if-not-exists" in line for line in log.read_text().splitlines())
