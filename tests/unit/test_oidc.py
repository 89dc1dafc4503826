"""The pieces of the OIDC login that need no provider: the redirect allow-list, roles from a claim, the upgrade
form, and a server without a provider. The flow itself runs against a real provider in tests/e2e/test_oidc.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.auth.oidc.login import OidcLogin, claimed_roles, redirect_allowed
from server.auth.oidc.provider import OidcProvider
from server.auth.service import parse_upgrade
from server.core.config import Settings
from server.core.errors import ApiError

ALLOWED = ["https://app.example.com/auth/", "http://localhost:3000/callback"]


@pytest.mark.parametrize(("url", "allowed"), [
    ("https://app.example.com/auth/", True),
    ("https://app.example.com/auth/done?x=1", True),
    ("https://APP.example.com/auth/done", True),
    ("http://localhost:3000/callback", True),
    ("http://localhost:3000/callback?next=/", True),
    ("http://localhost:3000/callback/more", False),  # the entry does not end with /: exact path only
    ("http://localhost:3000/callbackx", False),
    ("http://app.example.com/auth/", False),  # another scheme
    ("https://app.example.com:8443/auth/", False),
    ("https://app.example.com.evil.com/auth/", False),
    ("https://app.example.com@evil.com/auth/", False),
    ("https://app.example.com/other/", False),
    ("javascript:alert(1)", False),
])
def test_redirect_allow_list(url: str, allowed: bool) -> None:
    assert redirect_allowed(url, ALLOWED) is allowed


def test_roles_come_from_a_dotted_claim_and_only_known_ones_count() -> None:
    claims = {"realm_access": {"roles": ["offline_access", "admin", 7]}, "scope_roles": "admin other"}
    assert claimed_roles(claims, "realm_access.roles") == ["admin"]
    assert claimed_roles(claims, "scope_roles") == ["admin"]
    assert claimed_roles(claims, "resource_access.jan.roles") == []
    assert claimed_roles({"realm_access": "admin"}, "realm_access.roles") == []


def test_upgrade_form() -> None:
    upgrade = parse_upgrade({"email": " a@example.com ", "username": "alice", "full_name": " Alice "})
    assert (upgrade.email, upgrade.username, upgrade.full_name) == ("a@example.com", "alice", "Alice")
    assert parse_upgrade({"email": "a@example.com", "username": "alice"}).full_name is None
    for payload, param in [
        ({"username": "alice"}, "email"),
        ({"email": "not-an-email", "username": "alice"}, "email"),
        ({"email": "a@example.com", "username": "al"}, "username"),
        ({"email": "a@example.com", "username": "guest-123"}, "username"),
        ({"email": "a@example.com", "username": "has space"}, "username"),
        ({"email": "a@example.com", "username": 5}, "username"),
    ]:
        with pytest.raises(ApiError) as error:
            parse_upgrade(payload)
        assert (error.value.status, error.value.param) == (400, param)


async def test_without_a_provider_login_is_501(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    provider = OidcProvider(settings)
    login = OidcLogin(settings, None, provider, None)  # type: ignore[arg-type]
    for attempt in (login.start("https://app.example.com/"), login.finish(code="c", state="s")):
        with pytest.raises(ApiError) as error:
            await attempt
        assert (error.value.status, error.value.code) == (501, "oidc_disabled")
    await provider.close()


def test_an_issuer_needs_a_client_id_and_urls_must_be_http() -> None:
    with pytest.raises(ValueError, match="oidc_client_id"):
        Settings(_env_file=None, oidc_issuer="https://idp.example.com")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="http"):
        Settings(
            _env_file=None, oidc_issuer="https://idp.example.com", oidc_client_id="jan",  # type: ignore[call-arg]
            oidc_allowed_redirect_urls=["ftp://app.example.com/"],
        )
