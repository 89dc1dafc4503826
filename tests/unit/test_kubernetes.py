"""deploy/kubernetes: every manifest is valid against the Kubernetes API schemas (kubernetes-validate, strict: no
unknown fields), and the Deployment, Service, probes, ConfigMap and Secret agree with the server.

The base's files are validated one by one; the overlays are rendered with `kubectl kustomize` (kustomize as built
into kubectl) and every rendered resource is validated. Without kubectl the overlay tests skip."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import SecretStr

from server.core.config import Settings

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
BASE = KUBERNETES / "base"
OVERLAYS = ["dev", "prod"]
# The oldest Kubernetes the manifests use fields of (preStop `sleep`: 1.29 beta, on by default from 1.30) and the
# newest the pinned kubernetes-validate knows.
VERSIONS = ["1.30", "1.37"]
SECRET_SETTINGS = {
    name for name, field in Settings.model_fields.items() if field.annotation is SecretStr
} | {"database_url"}


def _documents(text: str) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(text) if document]


def _by_kind(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {document["kind"]: document for document in documents}


def _env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


@pytest.fixture(scope="module")
def base() -> dict[str, dict[str, Any]]:
    """The base's resources, and the Secret an operator creates from secret.example.yaml (outside the base, so
    that applying an overlay never overwrites it)."""
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    names = [*kustomization["resources"], "secret.example.yaml"]
    return _by_kind([document for name in names for document in _documents((BASE / name).read_text())])


def _render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (for `kubectl kustomize`) is not installed")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(KUBERNETES / "overlays" / overlay)], capture_output=True, text=True, timeout=60
    )
    assert rendered.returncode == 0, rendered.stderr
    return _documents(rendered.stdout)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_base_is_valid_kubernetes(base: dict[str, dict[str, Any]], version: str) -> None:
    assert set(base) == {"Deployment", "Service", "Secret", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                         "NetworkPolicy"}
    for document in base.values():
        kubernetes_validate.validate(document, version, strict=True)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_renders_valid_kubernetes(overlay: str, version: str) -> None:
    documents = _render(overlay)
    kinds = sorted(document["kind"] for document in documents)
    # prod's Secret is created out of band (base/secret.example.yaml); dev brings its own.
    secret = ["Secret"] if overlay == "dev" else []
    assert kinds == sorted(["Namespace", "ConfigMap", *secret, "Service", "Deployment", "HorizontalPodAutoscaler",
                            "PodDisruptionBudget", "NetworkPolicy"])
    for document in documents:
        kubernetes_validate.validate(document, version, strict=True)


def test_the_pods_are_probed_over_grpc_health_and_readyz(base: dict[str, dict[str, Any]]) -> None:
    pod = base["Deployment"]["spec"]["template"]
    container = next(c for c in pod["spec"]["containers"] if c["name"] == "jan-server")
    assert {port["name"]: port["containerPort"] for port in container["ports"]} == {"http": 8000, "grpc": 50051}
    assert container["startupProbe"]["grpc"] == {"port": 50051}
    assert container["livenessProbe"]["grpc"] == {"port": 50051}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    # The kubelet probes the pod's address, so the gRPC server must not be on loopback only.
    assert {"name": "JAN_GRPC_HOST", "value": "0.0.0.0"} in container["env"]
    assert set(container["resources"]) == {"requests", "limits"}
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def test_the_service_names_its_ports_and_selects_the_pods(base: dict[str, dict[str, Any]]) -> None:
    pod_labels = base["Deployment"]["spec"]["template"]["metadata"]["labels"]
    service = base["Service"]["spec"]
    assert [(port["name"], port["port"], port["appProtocol"]) for port in service["ports"]] == [
        ("http", 8000, "http"), ("grpc", 50051, "grpc")
    ]
    for selector in [
        service["selector"],
        base["Deployment"]["spec"]["selector"]["matchLabels"],
        base["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        base["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"],
    ]:
        assert selector.items() <= pod_labels.items()
    assert base["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == base["Deployment"]["metadata"]["name"]


def test_config_and_secret_hold_real_settings_in_the_right_place(base: dict[str, dict[str, Any]]) -> None:
    config = _env_file(BASE / "config.env")
    secret = base["Secret"]["stringData"]
    for name in [*config, *secret]:
        assert name.startswith("JAN_") and name.removeprefix("JAN_").lower() in Settings.model_fields, name
    assert not {name.removeprefix("JAN_").lower() for name in config} & SECRET_SETTINGS
    assert {name.removeprefix("JAN_").lower() for name in secret} <= SECRET_SETTINGS
    assert "JAN_DATABASE_URL" in secret


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_configures_a_server_that_starts(
    overlay: str, base: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment the pod gets (ConfigMap, Secret and the Deployment's env) parses as Settings."""
    documents = _by_kind(_render(overlay))
    container = documents["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    secret = documents.get("Secret", base["Secret"])
    environment = {
        **documents["ConfigMap"]["data"],
        **secret["stringData"],
        **{variable["name"]: variable["value"] for variable in container["env"]},
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    if overlay == "prod":
        # secret.example.yaml's placeholders: the API-key secret's is too short on purpose, so a forgotten one
        # stops the server instead of running with a value everyone knows.
        with pytest.raises(ValueError, match="at least 32 characters"):
            Settings(_env_file=None)
        monkeypatch.setenv("JAN_API_KEY_SECRET", "x" * 32)
    settings = Settings(_env_file=None)
    assert str(settings.data_dir) == "/data" and settings.grpc_port == 50051 and settings.port == 8000
    if overlay == "dev":
        assert settings.database.startswith("sqlite") and settings.media_storage == "local"
    else:
        assert settings.database.startswith("postgresql+asyncpg://") and settings.media_storage == "s3"
