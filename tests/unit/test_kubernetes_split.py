"""deploy/kubernetes/split: a Deployment and Service per deployable service plus the gateway and the migration Job,
valid against the Kubernetes API schemas, and wired the way server/topology.py routes (JAN_SERVICE_TARGETS)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from server.core.config import Settings
from server.topology import SERVICES

SPLIT = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "split"
VERSIONS = ["1.30", "1.37"]


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (for `kubectl kustomize`) is not installed")
    result = subprocess.run([kubectl, "kustomize", str(SPLIT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def _named(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == kind}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_resource_is_valid_kubernetes(rendered: list[dict[str, Any]], version: str) -> None:
    for document in rendered:
        kubernetes_validate.validate(document, version, strict=True)


def test_each_service_has_its_deployment_and_grpc_service(rendered: list[dict[str, Any]]) -> None:
    deployments, services = _named(rendered, "Deployment"), _named(rendered, "Service")
    assert set(deployments) == {f"jan-{name}" for name in [*SERVICES, "gateway"]} == set(services)
    for name in SERVICES:
        container = deployments[f"jan-{name}"]["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == ["serve", "--service", name]
        assert container["readinessProbe"]["grpc"] == {"port": 50051}
        assert {"name": "JAN_GRPC_HOST", "value": "0.0.0.0"} in container["env"]
        (port,) = services[f"jan-{name}"]["spec"]["ports"]
        assert (port["name"], port["port"], port["appProtocol"]) == ("grpc", 50051, "grpc")
    gateway = deployments["jan-gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert gateway["args"] == ["serve", "--service", "gateway"]
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    (job,) = [d for d in rendered if d["kind"] == "Job"]
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]


def test_service_targets_name_the_services(rendered: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    (config,) = [d for d in rendered if d["kind"] == "ConfigMap"]
    for name, value in config["data"].items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)
    assert settings.service_targets == {name: f"jan-{name}:50051" for name in SERVICES}
    assert json.loads(config["data"]["JAN_SERVICE_TARGETS"]).keys() == SERVICES.keys()
