"""docker-compose.yml: valid against the Compose Specification's JSON schema, each profile's services, the files it
mounts, the JAN_* settings it gives the server, healthchecks; and the Envoy stats sidecar, run for real.

Docker is not available here, so `docker compose config` cannot run: the vendored schema (tests/schemas/README.md)
and these checks stand in for it."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml

from server.core.config import Settings
from server.gateway.envoy import envoy_binary
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA_FILE = ROOT / "tests" / "schemas" / "compose-spec.json"

PROFILES = {
    None: {"jan-server", "postgres", "minio", "minio-bucket"},
    "gpu": {"triton"},
    "search": {"searxng"},
    "observability": {"envoy-stats", "prometheus", "grafana", "otel-collector", "jaeger"},
    "keycloak": {"keycloak"},
}
# Services without a healthcheck, and why (each reason is also a comment in docker-compose.yml).
NO_HEALTHCHECK = {
    "minio-bucket": "one-shot job",
    "otel-collector": "distroless image without a client",
    "keycloak": "image without an HTTP client",
}
_INTERPOLATION = re.compile(r"\$\{(\w+):-([^}]*)\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def test_the_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    # The file names draft 2019-09 by its old http:// URI, which jsonschema no longer maps to a draft by itself.
    assert schema["$schema"] == "http://json-schema.org/draft/2019-09/schema#"
    validator = jsonschema.Draft201909Validator(schema)
    errors = [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(compose)]
    assert errors == []


def test_each_profile_runs_its_services(services: dict[str, dict[str, Any]]) -> None:
    by_profile: dict[str | None, set[str]] = {}
    for name, service in services.items():
        for profile in service.get("profiles", [None]):
            by_profile.setdefault(profile, set()).add(name)
    assert by_profile == PROFILES
    assert services["jan-server"]["build"] == "." and (ROOT / "Dockerfile").is_file()
    assert services["postgres"]["image"] == "pgvector/pgvector:pg16"
    # A default service never waits for one that its profile may leave out.
    for name in PROFILES[None]:
        assert set(services[name].get("depends_on", {})) <= PROFILES[None]


def test_every_mounted_file_exists(services: dict[str, dict[str, Any]]) -> None:
    mounted = [volume.split(":")[0] for service in services.values() for volume in service.get("volumes", [])]
    bind_mounts = [source for source in mounted if source.startswith("./")]
    assert "./triton_models" in bind_mounts and "./deploy/searxng/settings.yml" in bind_mounts
    assert [source for source in bind_mounts if not (ROOT / source).exists()] == []


def test_every_long_running_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    assert {name for name, service in services.items() if "healthcheck" not in service} == set(NO_HEALTHCHECK)
    assert services["jan-server"]["healthcheck"]["test"][-1].count("/readyz") == 1


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """The JAN_* variables as the container gets them with nothing set in the shell: `${X:-default}` is its
    default, and a variable without a value is passed through from the shell, so it is left out."""
    return {
        name: _INTERPOLATION.sub(lambda match: match.group(2), str(value))
        for name, value in service.get("environment", {}).items()
        if name.startswith("JAN_") and value is not None
    }


def test_the_server_gets_real_settings(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for service in services.values():
        names = [name for name in service.get("environment", {}) if name.startswith("JAN_")]
        assert [name for name in names if name.removeprefix("JAN_").lower() not in Settings.model_fields] == []
    for name, value in _environment(services["jan-server"]).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("JAN_DATA_DIR", str(tmp_path))
    settings = Settings(_env_file=None)
    assert settings.database.startswith("postgresql+asyncpg://jan:")
    assert settings.database.endswith("@postgres:5432/jan")
    postgres = services["postgres"]["environment"]
    assert f"{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}@" in settings.database
    minio = services["minio"]["environment"]
    assert settings.media_storage == "s3" and settings.media_s3_endpoint == "http://minio:9000"
    assert settings.media_s3_access_key.get_secret_value() == minio["MINIO_ROOT_USER"]
    assert settings.media_s3_secret_key.get_secret_value() == minio["MINIO_ROOT_PASSWORD"]
    assert f"jan/{settings.media_s3_bucket}" in services["minio-bucket"]["command"][0]
    # Nothing set in the shell: the embedded model, no SearXNG, no identity provider.
    assert [model.backend for model in settings.models] == ["llamacpp"]
    assert settings.searxng_url == "" and settings.oidc_issuer == ""


def test_the_gpu_profile_serves_triton_models(services: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    triton = services["triton"]
    assert triton["image"] == "nvcr.io/nvidia/tritonserver:26.09-vllm-python-py3"
    assert "./triton_models:/models:ro" in triton["volumes"]
    assert "--model-repository=/models" in triton["command"]
    assert triton["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}
    ]
    # The JAN_MODELS value the README's gpu command passes: a Triton model at the triton service's gRPC port.
    assert "JAN_MODELS" in services["jan-server"]["environment"]
    models_json = (ROOT / "deploy" / "compose" / "models-gpu.json").read_text()
    settings = Settings(_env_file=None, data_dir=tmp_path, models=json.loads(models_json))
    for model in settings.models:
        assert model.backend == "triton" and model.triton_url == "triton:8001"
        assert (ROOT / model.triton_template_path).is_file()
        assert (ROOT / "triton_models" / (model.upstream_model or model.id) / "config.pbtxt").is_file()


def test_the_search_profile_answers_json(services: dict[str, dict[str, Any]]) -> None:
    searxng = yaml.safe_load((ROOT / "deploy" / "searxng" / "settings.yml").read_text())
    assert "json" in searxng["search"]["formats"]
    assert "JAN_SEARXNG_URL=http://searxng:8080" in COMPOSE_FILE.read_text()
    assert "http://127.0.0.1:8080/healthz" in services["searxng"]["healthcheck"]["test"]


def test_the_observability_profile_is_wired(services: dict[str, dict[str, Any]]) -> None:
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert jobs["envoy"]["metrics_path"] == "/stats/prometheus"
    assert jobs["envoy"]["static_configs"][0]["targets"] == ["jan-server:9902"]
    stats = services["envoy-stats"]
    assert stats["network_mode"] == "service:jan-server" and stats["image"] == services["jan-server"]["image"]
    assert "./deploy/envoy/stats-proxy.yaml:/etc/jan/stats-proxy.yaml:ro" in stats["volumes"]
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "datasources.yml").read_text())["datasources"]
    assert {source["url"] for source in datasources} == {"http://prometheus:9090", "http://jaeger:16686"}
    provider = yaml.safe_load((provisioning / "dashboards" / "jan.yml").read_text())["providers"][0]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in services["grafana"]["volumes"]
    collector = yaml.safe_load((ROOT / "deploy" / "otel-collector" / "config.yaml").read_text())
    assert collector["exporters"]["otlp/jaeger"]["endpoint"] == "jaeger:4317"


def _start(binary: str, config: dict[str, Any], path: Path) -> subprocess.Popen[bytes]:
    path.write_text(yaml.safe_dump(config))
    return subprocess.Popen(
        [binary, "--config-path", str(path), "--disable-hot-restart", "--log-level", "warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


@pytest.fixture
def stats_proxy(tmp_path: Path) -> Iterator[str]:
    """An Envoy with only its admin API on loopback (as jan-server's), and the stats proxy in front of it."""
    binary = envoy_binary(Settings(_env_file=None, data_dir=tmp_path))
    admin_port, proxy_port = free_port(), free_port()
    admin_only = {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}}}
    proxy = yaml.safe_load((ROOT / "deploy" / "envoy" / "stats-proxy.yaml").read_text())
    listener = proxy["static_resources"]["listeners"][0]["address"]["socket_address"]
    listener.update(address="127.0.0.1", port_value=proxy_port)
    endpoint = proxy["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert endpoint["endpoint"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9901}
    endpoint["endpoint"]["address"]["socket_address"]["port_value"] = admin_port
    processes = [_start(binary, admin_only, tmp_path / "admin.yaml"), _start(binary, proxy, tmp_path / "proxy.yaml")]
    url = f"http://127.0.0.1:{proxy_port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/stats/prometheus", trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the stats proxy did not answer"
            time.sleep(0.1)
        yield url
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)


def test_the_stats_proxy_exposes_only_prometheus_stats(stats_proxy: str) -> None:
    with httpx.Client(base_url=stats_proxy, trust_env=False) as client:
        stats = client.get("/stats/prometheus")
        assert stats.status_code == 200 and "envoy_server_live" in stats.text
        for method, path in [("POST", "/quitquitquit"), ("POST", "/healthcheck/fail"), ("GET", "/config_dump"),
                             ("GET", "/stats"), ("POST", "/stats/prometheus")]:
            assert client.request(method, path).status_code == 404, (method, path)
        # The admin Envoy behind it is still up.
        assert client.get("/stats/prometheus").status_code == 200
