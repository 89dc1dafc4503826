"""docker-compose.yml and the Keycloak realm it imports agree with each other and with the server's settings:
the compose file parses, the `keycloak` profile imports the realm, and the realm has the client, audience, roles
claim and users that the JAN_OIDC_* settings of the jan-server service expect."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from server.core.config import Settings

ROOT = Path(__file__).resolve().parents[2]
REALM_FILE = ROOT / "deploy" / "keycloak" / "realm-jan.json"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


@pytest.fixture(scope="module")
def realm() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(REALM_FILE.read_text())
    return loaded


@pytest.fixture(scope="module")
def settings(compose: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The server's settings as the compose file sets them, with the issuer the README's command gives."""
    server_environment: dict[str, str] = compose["services"]["jan-server"]["environment"]
    environment: dict[str, Any] = {
        name.removeprefix("JAN_").lower(): value for name, value in server_environment.items()
        if name.startswith("JAN_OIDC_")
    }
    environment["oidc_issuer"] = "http://localhost:8080/realms/jan"
    environment["oidc_allowed_redirect_urls"] = json.loads(environment["oidc_allowed_redirect_urls"])
    return Settings(_env_file=None, data_dir=tmp_path_factory.mktemp("data"), **environment)


def test_the_keycloak_profile_imports_the_realm(compose: dict[str, Any]) -> None:
    keycloak = compose["services"]["keycloak"]
    assert keycloak["profiles"] == ["keycloak"]
    assert keycloak["image"].startswith("quay.io/keycloak/keycloak:")
    assert "--import-realm" in keycloak["command"]
    assert "./deploy/keycloak:/opt/keycloak/data/import:ro" in keycloak["volumes"]
    # Without the profile only the server starts, with login disabled unless JAN_OIDC_ISSUER is given.
    assert "profiles" not in compose["services"]["jan-server"]
    assert compose["services"]["jan-server"]["environment"]["JAN_OIDC_ISSUER"] == "${JAN_OIDC_ISSUER:-}"


def test_the_realm_has_the_client_the_server_is_configured_with(realm: dict[str, Any], settings: Settings) -> None:
    assert settings.oidc_issuer.endswith(f"/realms/{realm['realm']}")
    assert f"/realms/{realm['realm']}/" in settings.oidc_discovery_url
    client = next(client for client in realm["clients"] if client["clientId"] == settings.oidc_client_id)
    assert client["secret"] == settings.oidc_client_secret.get_secret_value()
    assert client["standardFlowEnabled"] and not client["publicClient"]
    assert settings.oidc_callback_url in client["redirectUris"]
    assert client["attributes"]["pkce.code.challenge.method"] == "S256"
    mappers = {mapper["protocolMapper"]: mapper["config"] for mapper in client["protocolMappers"]}
    assert mappers["oidc-audience-mapper"]["included.custom.audience"] == settings.oidc_token_audience
    assert mappers["oidc-audience-mapper"]["access.token.claim"] == "true"
    assert mappers["oidc-usermodel-realm-role-mapper"]["claim.name"] == settings.oidc_roles_claim


def test_the_realm_grants_admin_to_one_test_user(realm: dict[str, Any]) -> None:
    assert {"name": "admin"}.items() <= realm["roles"]["realm"][0].items()
    admins = [user["username"] for user in realm["users"] if "admin" in user.get("realmRoles", [])]
    others = [user["username"] for user in realm["users"] if "admin" not in user.get("realmRoles", [])]
    assert admins == ["root"] and others == ["alice"]
    for user in realm["users"]:
        assert user["enabled"] and user["email"] and user["credentials"][0]["type"] == "password"
