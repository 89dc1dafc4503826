"""The gateway config: rendered from Settings and accepted by the real Envoy (`--mode validate` also loads the
Lua scripts, the JWKS file and the descriptor set); EnvoyProcess starting and stopping the real binary.

No gRPC services run here: Envoy's own replies (401 from jwt_authn, 503 with no upstream or no auth service) are
enough to see the listener, the auth rules and the OpenAI-shaped local replies work. Behaviour with the services,
API keys and rate limits included, is e2e.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from server.core.config import Settings
from server.gateway import envoy
from server.gateway.envoy import EnvoyError, EnvoyProcess, envoy_binary, render_config
from server.protogen import DESCRIPTOR_SET, ensure_generated
from tests.support.ports import free_port


@pytest.fixture(scope="module")
def descriptor_set() -> Path:
    ensure_generated()
    return DESCRIPTOR_SET


def write_jwks(path: Path) -> None:
    """An ES256 public key, as AuthService publishes it; Envoy refuses to start with an empty key set."""
    jwk = json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"keys": [{**jwk, "kid": "test", "alg": "ES256", "use": "sig"}]}))


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    settings = Settings(_env_file=None, data_dir=data_dir, **overrides)  # type: ignore[arg-type]
    write_jwks(settings.jwks_path)
    return settings


def free_port_settings(data_dir: Path) -> Settings:
    return make_settings(data_dir, port=free_port(), grpc_port=free_port(), envoy_admin_port=free_port())


def validate(
    settings: Settings, descriptor_set: Path, tmp_path: Path, *, idp_jwks_uri: str = ""
) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "envoy.yaml"
    config.write_text(render_config(settings, descriptor_set, idp_jwks_uri=idp_jwks_uri))
    return subprocess.run(
        [envoy_binary(settings), "--mode", "validate", "-c", str(config)], capture_output=True, text=True
    )


def test_default_settings_render_a_valid_config(tmp_path: Path, descriptor_set: Path) -> None:
    settings = make_settings(tmp_path / "data")
    result = validate(settings, descriptor_set, tmp_path)
    assert result.returncode == 0, result.stderr
    config = render_config(settings, descriptor_set)
    assert "port_value: 8000" in config
    assert "port_value: 50051" in config
    assert "port_value: 9901" in config
    assert "clock_skew_seconds: 5\n" in config
    assert "max_request_body_size: 8388608\n" in config


def test_default_rate_limits_are_the_seeds(tmp_path: Path, descriptor_set: Path) -> None:
    config = render_config(make_settings(tmp_path / "data"), descriptor_set)
    bucket = "token_bucket: {{ max_tokens: {0}, tokens_per_fill: {0}, fill_interval: {1} }}"
    for entries, limit, interval in (
        ('{ key: tier, value: "free" }, { key: api_key }', 3, "60s"),
        ('{ key: tier, value: "pro" }, { key: api_key }', 60, "60s"),
        ('{ key: tier, value: "free" }, { key: api_key }', 50, "86400s"),
        ('{ key: tier, value: "pro" }, { key: api_key }', 100000, "86400s"),
        ("{ key: caller, value: user }, { key: user }", 100, "60s"),
        ("{ key: caller, value: anonymous }, { key: remote_address }", 100, "60s"),
    ):
        assert f"- entries: [ {entries} ]\n                {bucket.format(limit, interval)}\n" in config
    # Enterprise has no daily quota by default, so no daily bucket.
    assert config.count('value: "enterprise"') == 1


def test_rate_limit_settings_render_a_valid_config(tmp_path: Path, descriptor_set: Path) -> None:
    settings = make_settings(
        tmp_path / "data",
        rate_limit_user_per_minute=7,
        rate_limit_ip_per_minute=9,
        rate_limit_routes={"/v1/chat/completions": 20, '/odd"path': 5},
        api_key_tiers={"basic": {"per_minute": 11}, "team-2": {"per_minute": 13, "per_day": 1000}},
        api_key_default_tier="basic",
    )
    result = validate(settings, descriptor_set, tmp_path)
    assert result.returncode == 0, result.stderr
    config = render_config(settings, descriptor_set)
    for expected in (
        'descriptor_value: "/v1/chat/completions"',
        'string_match: { prefix: "/odd\\"path" }',
        '{ key: tier, value: "team-2" }, { key: api_key } ]\n                token_bucket: { max_tokens: 1000,',
        "max_tokens: 7,",
        "max_tokens: 9,",
    ):
        assert expected in config


def test_without_daily_quotas_there_is_no_daily_limiter(tmp_path: Path, descriptor_set: Path) -> None:
    settings = make_settings(tmp_path / "data", api_key_tiers={"pro": {"per_minute": 60}})
    result = validate(settings, descriptor_set, tmp_path)
    assert result.returncode == 0, result.stderr
    config = render_config(settings, descriptor_set)
    assert "rate_limit_minute" in config
    assert "rate_limit_day" not in config


def test_non_default_settings_render_a_valid_config(tmp_path: Path, descriptor_set: Path) -> None:
    # A data dir with a space and a colon checks that paths are quoted.
    settings = make_settings(
        tmp_path / "my data: 2",
        port=18080,
        grpc_port=15051,
        envoy_admin_port=19901,
        jwt_issuer="https://issuer.example",
        jwt_audience="other-api",
        jwt_clock_skew_seconds=0,
        max_request_bytes=1024,
    )
    result = validate(settings, descriptor_set, tmp_path)
    assert result.returncode == 0, result.stderr
    config = render_config(settings, descriptor_set)
    for expected in (
        "port_value: 18080",
        "port_value: 15051",
        "port_value: 19901",
        'issuer: "https://issuer.example"',
        'audiences: ["other-api"]',
        f"filename: {json.dumps(str(settings.jwks_path))}",
        "clock_skew_seconds: 0\n",
        "max_request_body_size: 1024\n",
        f"proto_descriptor: {json.dumps(str(descriptor_set.resolve()))}",
    ):
        assert expected in config


@pytest.mark.parametrize("script", sorted(envoy.LUA_PATHS))
def test_validation_loads_the_lua_scripts(
    tmp_path: Path, descriptor_set: Path, monkeypatch: pytest.MonkeyPatch, script: str
) -> None:
    """Proves the tests above would catch a Lua syntax error in any of the scripts."""
    broken = tmp_path / f"{script}.lua"
    shutil.copyfile(envoy.LUA_PATHS[script], broken)
    with broken.open("a") as lua:
        lua.write("\nfunction unfinished(\n")
    monkeypatch.setitem(envoy.LUA_PATHS, script, broken)
    result = validate(make_settings(tmp_path / "data"), descriptor_set, tmp_path)
    assert result.returncode != 0
    assert "script load error" in result.stderr


@pytest.mark.parametrize("jwks_uri", [
    "https://idp.example.com/realms/jan/protocol/openid-connect/certs",
    "http://keycloak:8080/realms/jan/protocol/openid-connect/certs",
])
def test_an_identity_provider_renders_a_valid_config(tmp_path: Path, descriptor_set: Path, jwks_uri: str) -> None:
    settings = make_settings(
        tmp_path / "data", oidc_issuer="https://idp.example.com/realms/jan", oidc_client_id="jan",
        oidc_audience="jan-api",
    )
    result = validate(settings, descriptor_set, tmp_path, idp_jwks_uri=jwks_uri)
    assert result.returncode == 0, result.stderr
    config = render_config(settings, descriptor_set, idp_jwks_uri=jwks_uri)
    assert "requires_any: { requirements: [ { provider_name: jan }, { provider_name: idp } ] }" in config
    assert f"uri: {json.dumps(jwks_uri)}, cluster: idp_jwks" in config
    assert ("UpstreamTlsContext" in config) == jwks_uri.startswith("https://")
    # Without a provider there is neither the provider nor its cluster.
    plain = render_config(settings, descriptor_set)
    assert "idp_jwks" not in plain and "requires: { provider_name: jan }" in plain


def test_envoy_binary_is_the_wheel_binary_unless_configured(tmp_path: Path) -> None:
    default = envoy_binary(Settings(_env_file=None, data_dir=tmp_path))
    assert Path(default).is_file()
    assert Path(default).parent.name == "_bin"
    configured = Settings(_env_file=None, data_dir=tmp_path, envoy_bin="/opt/envoy")
    assert envoy_binary(configured) == "/opt/envoy"


@pytest.fixture
async def running_envoy(tmp_path: Path, descriptor_set: Path) -> AsyncIterator[Settings]:
    settings = free_port_settings(tmp_path / "data")
    process = EnvoyProcess(settings, descriptor_set)
    await process.start()
    yield settings
    await process.stop()


async def test_envoy_process_serves_openai_shaped_local_replies(running_envoy: Settings) -> None:
    async with httpx.AsyncClient(base_url=running_envoy.public_url) as client:
        bad_token = await client.get("/v1/models", headers={"Authorization": "Bearer eyJnot.a.jwt"})
        no_auth_service = await client.get("/v1/models", headers={"x-user-id": "spoofed"})
        no_upstream = await client.get("/healthz")
    assert bad_token.status_code == 401
    assert bad_token.headers["www-authenticate"].startswith("Bearer")
    assert bad_token.json() == {
        "error": {
            "type": "auth_error",
            "code": "unauthorized",
            "message": "Jwt header is an invalid JSON",
            "param": None,
            "request_id": bad_token.headers["x-request-id"],
        }
    }
    # Without a JWT, ext_authz asks the (absent) auth service: nobody gets in, and it is a 503, not a 401.
    assert no_auth_service.status_code == 503
    assert no_auth_service.json()["error"]["code"] == "service_unavailable"
    assert no_auth_service.json()["error"]["message"] == "The authentication service is unavailable; retry shortly"
    assert no_auth_service.json()["error"]["request_id"] == no_auth_service.headers["x-request-id"]
    # /healthz needs no credential, so it reaches the (absent) gRPC services.
    assert no_upstream.status_code == 503
    assert no_upstream.json()["error"]["code"] == "service_unavailable"
    assert no_upstream.json()["error"]["request_id"] == no_upstream.headers["x-request-id"]


async def test_envoy_process_writes_its_config_and_stops(tmp_path: Path, descriptor_set: Path) -> None:
    settings = free_port_settings(tmp_path / "data")
    process = EnvoyProcess(settings, descriptor_set)
    await process.start()
    assert process.config_path == settings.data_dir / "envoy.yaml"
    assert process.config_path.read_text() == render_config(settings, descriptor_set)
    await process.stop()
    await process.stop()  # idempotent
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{settings.envoy_admin_port}/ready")


async def test_envoy_process_reports_why_envoy_did_not_start(tmp_path: Path, descriptor_set: Path) -> None:
    settings = free_port_settings(tmp_path / "data")
    settings.jwks_path.unlink()
    with pytest.raises(EnvoyError, match=r"exited with code 1 before it was ready:\n.*jwks\.json"):
        await EnvoyProcess(settings, descriptor_set).start()


async def test_envoy_process_refuses_an_admin_port_another_envoy_holds(
    running_envoy: Settings, tmp_path: Path, descriptor_set: Path
) -> None:
    settings = free_port_settings(tmp_path / "second")
    settings.envoy_admin_port = running_envoy.envoy_admin_port
    # Either ours fails to bind, or it sees the other one answering first.
    with pytest.raises(EnvoyError, match=r"admin port|Address already in use"):
        await EnvoyProcess(settings, descriptor_set).start()
