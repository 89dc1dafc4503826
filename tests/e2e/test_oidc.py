"""Login with an identity provider, end to end: the test OIDC provider (Authlib's authorization server on loopback,
tests/support/oidc_provider.py), Jan Server configured with its issuer, and httpx as the browser following
redirects. Then the provider's own access tokens used directly through Envoy, on both databases."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from werkzeug.serving import make_server

from tests.conftest import DATABASES, _database_url
from tests.e2e.conftest import assert_error_envelope, guest_login
from tests.support.oidc_provider import TestOidcProvider, TestUser
from tests.support.ports import free_port, refused_port
from tests.support.stack import Stack, make_stack

CLIENT_ID = "jan-server"
CLIENT_SECRET = "test-client-secret"
AUDIENCE = "jan-api"


class App:
    """The web app a login returns to: it answers 200 (the tokens are in the URL's fragment, which no server sees)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/app/"
        self._server = make_server("127.0.0.1", self.port, self._wsgi)

    @staticmethod
    def _wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"app"]

    def __enter__(self) -> App:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def app() -> Iterator[App]:
    with App() as running:
        yield running


@pytest.fixture(scope="module")
def provider() -> Iterator[TestOidcProvider]:
    server = TestOidcProvider()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=DATABASES)
def oidc_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, provider: TestOidcProvider, app: App
) -> Iterator[Stack]:
    url = _database_url(request.param, request, str(tmp_path_factory.mktemp("oidc") / "jan.db"))
    stack = make_stack(
        url,
        oidc_issuer=provider.issuer,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret=CLIENT_SECRET,
        oidc_audience=AUDIENCE,
        oidc_roles_claim="realm_access.roles",
        oidc_allowed_redirect_urls=f'["{app.url}"]',
    )
    provider.register_client(CLIENT_ID, CLIENT_SECRET, [f"{stack.base_url}/auth/callback"])
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
def user(provider: TestOidcProvider) -> TestUser:
    """A user of the provider no earlier test has seen, who is the one logging in."""
    tag = uuid.uuid4().hex[:10]
    provider.user = TestUser(f"sub-{tag}", f"user-{tag}", f"{tag}@example.com", f"User {tag}")
    provider.id_token_overrides = {}
    return provider.user


def start_login(stack: Stack, redirect_url: str) -> dict[str, str]:
    response = httpx.get(f"{stack.base_url}/auth/login", params={"redirect_url": redirect_url})
    assert response.status_code == 200, response.text
    started: dict[str, str] = response.json()
    return started


def browse(url: str) -> httpx.Response:
    """What a browser does with the authorization URL: follow the redirects to their end."""
    return httpx.get(url, follow_redirects=True, timeout=30)


def fragment_tokens(location: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(location).fragment).items()}


def log_in(stack: Stack, app: App) -> tuple[dict[str, str], httpx.Response]:
    """The whole browser flow; the tokens from the final URL's fragment, and the callback's response."""
    final = browse(start_login(stack, app.url)["authorization_url"])
    assert final.status_code == 200 and final.text == "app", final.text
    callback = final.history[-1]
    assert callback.status_code == 302 and callback.url.path == "/auth/callback"
    return fragment_tokens(callback.headers["location"]), callback


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_browser_flow_ends_at_the_app_with_our_tokens(oidc_stack: Stack, app: App, user: TestUser) -> None:
    tokens, callback = log_in(oidc_stack, app)

    assert callback.headers["location"].startswith(app.url + "#")
    assert set(tokens) == {"access_token", "refresh_token", "expires_in", "token_type"}
    assert tokens["token_type"] == "Bearer" and tokens["refresh_token"].startswith("rt_")
    models = httpx.get(f"{oidc_stack.base_url}/v1/models", headers=bearer(tokens["access_token"]))
    assert models.status_code == 200, models.text
    me = httpx.get(f"{oidc_stack.base_url}/auth/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200 and me.headers["x-auth-method"] == "jwt"
    profile = me.json()
    assert profile["username"] == user.preferred_username and profile["email"] == user.email
    assert profile["name"] == user.name and profile["issuer"] == oidc_stack.env["JAN_OIDC_ISSUER"]
    assert profile["is_guest"] is False and profile["auth_method"] == "jwt"
    # The refresh token works like any other.
    refreshed = httpx.post(f"{oidc_stack.base_url}/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200 and refreshed.json()["user_id"] == profile["id"]


def test_logging_in_again_is_the_same_user(oidc_stack: Stack, app: App, user: TestUser) -> None:
    first, _ = log_in(oidc_stack, app)
    second, _ = log_in(oidc_stack, app)
    ids = [
        httpx.get(f"{oidc_stack.base_url}/auth/me", headers=bearer(tokens["access_token"])).json()["id"]
        for tokens in (first, second)
    ]
    assert ids[0] == ids[1]


def test_login_answers_the_providers_url_with_pkce_and_a_nonce(
    oidc_stack: Stack, app: App, provider: TestOidcProvider
) -> None:
    started = start_login(oidc_stack, app.url)
    url = urlsplit(started["authorization_url"])
    query = {name: values[0] for name, values in parse_qs(url.query).items()}
    assert f"{url.scheme}://{url.netloc}" == provider.issuer and url.path == "/authorize"
    assert query["state"] == started["state"] and query["client_id"] == CLIENT_ID
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["nonce"] and query["scope"] == "openid profile email"
    assert query["redirect_uri"] == f"{oidc_stack.base_url}/auth/callback"


@pytest.mark.parametrize("redirect_url", [
    "https://evil.example.com/app/",
    "http://127.0.0.1:1/app/",  # another port
    "{origin}/other/",  # not under /app/
    "{origin}/app",  # not the allowed path itself, which ends with /
    "{origin}@evil.example.com/app/",
    "{app}#fragment",
])
def test_a_redirect_url_off_the_allow_list_is_refused(oidc_stack: Stack, app: App, redirect_url: str) -> None:
    redirect_url = redirect_url.format(origin=app.url.removesuffix("/app/"), app=app.url)
    response = httpx.get(f"{oidc_stack.base_url}/auth/login", params={"redirect_url": redirect_url})
    assert_error_envelope(
        response, 400, type="invalid_request_error", code="invalid_redirect_url", param="redirect_url"
    )


def test_a_path_under_an_allowed_url_is_allowed(oidc_stack: Stack, app: App) -> None:
    response = httpx.get(f"{oidc_stack.base_url}/v1/auth/login", params={"redirect_url": app.url + "done?x=1"})
    assert response.status_code == 200, response.text


def test_a_replayed_callback_is_refused(oidc_stack: Stack, app: App, user: TestUser) -> None:
    _, callback = log_in(oidc_stack, app)
    replay = httpx.get(str(callback.url))
    error = assert_error_envelope(replay, 401, type="auth_error", code="unauthorized")
    assert "state" in str(error["message"])


def test_a_tampered_state_is_refused(oidc_stack: Stack, app: App, user: TestUser) -> None:
    url = urlsplit(start_login(oidc_stack, app.url)["authorization_url"])
    query = {name: values[0] for name, values in parse_qs(url.query).items()}
    query["state"] = query["state"][:-2] + ("AA" if not query["state"].endswith("AA") else "BB")
    response = browse(urlunsplit(url._replace(query=urlencode(query))))
    assert response.url.path == "/auth/callback"
    assert_error_envelope(response, 401, type="auth_error", code="unauthorized")


def test_a_callback_without_code_or_state_is_a_400(oidc_stack: Stack, app: App) -> None:
    no_state = httpx.get(f"{oidc_stack.base_url}/auth/callback", params={"code": "abc"})
    assert_error_envelope(no_state, 400, type="invalid_request_error", param="state")
    state = start_login(oidc_stack, app.url)["state"]
    no_code = httpx.get(f"{oidc_stack.base_url}/auth/callback", params={"state": state})
    assert_error_envelope(no_code, 400, type="invalid_request_error", param="code")


def test_a_code_the_provider_refuses_is_a_502(oidc_stack: Stack, app: App, user: TestUser) -> None:
    _, callback = log_in(oidc_stack, app)
    used_code = parse_qs(callback.url.query.decode())["code"][0]
    state = start_login(oidc_stack, app.url)["state"]
    response = httpx.get(f"{oidc_stack.base_url}/auth/callback", params={"code": used_code, "state": state})
    error = assert_error_envelope(response, 502, type="internal_error", code="identity_provider_error")
    assert "refused the authorization code" in str(error["message"])


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"nonce": "forged-nonce"}, "nonce"),
    ({"exp": int(time.time()) - 120, "iat": int(time.time()) - 600}, "expired"),
    ({"aud": ["another-client"]}, "audience"),
    ({"iss": "http://127.0.0.1:1"}, "issuer"),
])
def test_an_id_token_that_is_not_valid_is_refused(
    oidc_stack: Stack, app: App, provider: TestOidcProvider, user: TestUser, overrides: dict[str, Any], reason: str
) -> None:
    provider.id_token_overrides = overrides
    response = browse(start_login(oidc_stack, app.url)["authorization_url"])
    assert response.url.path == "/auth/callback"
    error = assert_error_envelope(response, 401, type="auth_error", code="unauthorized")
    assert reason in str(error["message"]).lower()


def test_the_providers_access_token_works_directly_as_the_same_user(
    oidc_stack: Stack, app: App, provider: TestOidcProvider, user: TestUser
) -> None:
    tokens, _ = log_in(oidc_stack, app)
    logged_in = httpx.get(f"{oidc_stack.base_url}/auth/me", headers=bearer(tokens["access_token"])).json()

    idp_token = provider.access_token(user, audience=AUDIENCE)
    models = httpx.get(f"{oidc_stack.base_url}/v1/models", headers=bearer(idp_token))
    assert models.status_code == 200, models.text
    assert models.headers["x-auth-method"] == "oidc"
    me = httpx.get(f"{oidc_stack.base_url}/v1/auth/me", headers=bearer(idp_token))
    assert me.status_code == 200, me.text
    assert me.json()["id"] == logged_in["id"] and me.json()["auth_method"] == "oidc"
    validated = httpx.post(f"{oidc_stack.base_url}/auth/validate", headers=bearer(idp_token))
    assert validated.status_code == 200 and validated.json()["valid"] is True
    assert validated.json()["user_id"] == logged_in["id"] and validated.json()["auth_method"] == "oidc"


def test_a_provider_token_creates_its_user_on_first_use(
    oidc_stack: Stack, provider: TestOidcProvider, user: TestUser
) -> None:
    idp_token = provider.access_token(user, audience=AUDIENCE)
    first = httpx.get(f"{oidc_stack.base_url}/auth/me", headers=bearer(idp_token))
    second = httpx.get(f"{oidc_stack.base_url}/auth/me", headers=bearer(provider.access_token(user, audience=AUDIENCE)))
    assert first.status_code == 200, first.text
    assert first.json()["username"] == user.preferred_username and first.json()["id"] == second.json()["id"]


def test_a_provider_token_for_another_audience_is_refused(
    oidc_stack: Stack, provider: TestOidcProvider, user: TestUser
) -> None:
    idp_token = provider.access_token(user, audience="some-other-api")
    response = httpx.get(f"{oidc_stack.base_url}/v1/models", headers=bearer(idp_token))
    assert_error_envelope(response, 401, type="auth_error", code="unauthorized")


def test_an_expired_provider_token_is_refused(oidc_stack: Stack, provider: TestOidcProvider, user: TestUser) -> None:
    idp_token = provider.access_token(user, audience=AUDIENCE, lifetime=-60)
    response = httpx.get(f"{oidc_stack.base_url}/v1/models", headers=bearer(idp_token))
    assert_error_envelope(response, 401, type="auth_error", code="unauthorized")


def test_a_token_signed_by_another_key_is_refused(oidc_stack: Stack, user: TestUser) -> None:
    impostor = TestOidcProvider()  # same kid, another key, never started
    impostor.issuer = str(oidc_stack.env["JAN_OIDC_ISSUER"])
    response = httpx.get(
        f"{oidc_stack.base_url}/v1/models", headers=bearer(impostor.access_token(user, audience=AUDIENCE))
    )
    assert_error_envelope(response, 401, type="auth_error", code="unauthorized")


def test_the_providers_admin_role_opens_the_admin_routes(
    oidc_stack: Stack, provider: TestOidcProvider, user: TestUser
) -> None:
    ordinary = httpx.get(
        f"{oidc_stack.base_url}/v1/admin/users/me", headers=bearer(provider.access_token(user, audience=AUDIENCE))
    )
    assert_error_envelope(ordinary, 403, type="permission_error")

    user.roles = ["admin", "offline_access"]
    admin_token = provider.access_token(user, audience=AUDIENCE)
    response = httpx.get(f"{oidc_stack.base_url}/v1/admin/users/me", headers=bearer(admin_token))
    assert response.status_code == 200, response.text
    me = httpx.get(f"{oidc_stack.base_url}/auth/me", headers=bearer(admin_token)).json()
    assert me["roles"] == ["admin"]


def test_a_login_carries_the_providers_roles_into_our_token(
    oidc_stack: Stack, app: App, user: TestUser
) -> None:
    user.roles = ["admin"]
    tokens, _ = log_in(oidc_stack, app)
    response = httpx.get(f"{oidc_stack.base_url}/v1/admin/users/me", headers=bearer(tokens["access_token"]))
    assert response.status_code == 200, response.text


def test_logout_and_revoke_end_the_login(oidc_stack: Stack, app: App, user: TestUser) -> None:
    base = oidc_stack.base_url
    tokens, _ = log_in(oidc_stack, app)
    logout = httpx.post(f"{base}/auth/logout", json={"refresh_token": tokens["refresh_token"]},
                        headers=bearer(tokens["access_token"]))
    assert logout.status_code == 200 and logout.json() == {"status": "logged out", "revoked": True}
    refresh = httpx.post(f"{base}/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert_error_envelope(refresh, 401, type="auth_error")

    tokens, _ = log_in(oidc_stack, app)
    revoke = httpx.post(f"{base}/auth/revoke", json={"refresh_token": tokens["refresh_token"]})
    assert revoke.status_code == 200 and revoke.json()["revoked"] is True
    refresh = httpx.post(f"{base}/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert_error_envelope(refresh, 401, type="auth_error")
    unknown = httpx.post(f"{base}/v1/auth/revoke", json={"token": "rt_unknown"})
    assert unknown.status_code == 200 and unknown.json()["revoked"] is False


def test_logout_without_a_token_ends_every_login_of_the_caller(oidc_stack: Stack) -> None:
    guest = guest_login(oidc_stack)
    response = httpx.post(f"{oidc_stack.base_url}/auth/logout", json={}, headers=bearer(guest["access_token"]))
    assert response.status_code == 200, response.text
    refresh = httpx.post(f"{oidc_stack.base_url}/v1/auth/refresh", json={"refresh_token": guest["refresh_token"]})
    assert_error_envelope(refresh, 401, type="auth_error")


def test_a_guest_upgrades_keeping_their_id(oidc_stack: Stack) -> None:
    base = oidc_stack.base_url
    guest = guest_login(oidc_stack)
    tag = uuid.uuid4().hex[:10]
    body = {"email": f"{tag}@example.com", "username": f"member-{tag}", "full_name": "Member Example"}
    upgraded = httpx.post(f"{base}/auth/upgrade", json=body, headers=bearer(guest["access_token"]))
    assert upgraded.status_code == 200, upgraded.text
    assert upgraded.json() == {
        "status": "upgraded", "id": guest["user_id"], "username": body["username"], "email": body["email"],
        "name": "Member Example",
    }
    me = httpx.get(f"{base}/auth/me", headers=bearer(guest["access_token"])).json()
    assert me["id"] == guest["user_id"] and me["is_guest"] is False and me["email"] == body["email"]

    again = httpx.post(f"{base}/auth/upgrade", json=body, headers=bearer(guest["access_token"]))
    assert_error_envelope(again, 409, type="invalid_request_error", code="already_registered")
    other = guest_login(oidc_stack)
    taken = httpx.post(f"{base}/v1/auth/upgrade", json=body, headers=bearer(other["access_token"]))
    assert_error_envelope(taken, 409, type="invalid_request_error", code="username_taken", param="username")
    taken = httpx.post(f"{base}/v1/auth/upgrade", json={**body, "username": f"x-{tag}"},
                       headers=bearer(other["access_token"]))
    assert_error_envelope(taken, 409, type="invalid_request_error", code="email_taken", param="email")
    bad = httpx.post(f"{base}/v1/auth/upgrade", json={**body, "email": "nope"}, headers=bearer(other["access_token"]))
    assert_error_envelope(bad, 400, type="invalid_request_error", param="email")


def test_spoofed_identity_headers_do_not_skip_the_credential_check(oidc_stack: Stack, user: TestUser) -> None:
    spoofed = {"x-jwt-payload": "eyJzdWIiOiJ4In0", "x-user-id": "user_someone", "x-auth-method": "oidc"}
    response = httpx.get(f"{oidc_stack.base_url}/v1/models", headers=spoofed)
    assert_error_envelope(response, 401, type="auth_error", code="unauthorized")


def test_a_login_the_provider_refused_is_a_401_and_ends_the_login(oidc_stack: Stack, app: App) -> None:
    state = start_login(oidc_stack, app.url)["state"]
    denied = {"error": "access_denied", "error_description": "The user said no", "state": state}
    response = httpx.get(f"{oidc_stack.base_url}/auth/callback", params=denied)
    error = assert_error_envelope(response, 401, type="auth_error", code="unauthorized")
    assert "The user said no" in str(error["message"])
    again = httpx.get(f"{oidc_stack.base_url}/auth/callback", params={"code": "x", "state": state})
    assert_error_envelope(again, 401, type="auth_error", code="unauthorized")


@pytest.fixture(scope="module")
def replica(oidc_stack: Stack) -> Iterator[Stack]:
    """A second server on the database of `oidc_stack` (SQLite: the same file), behind the same callback URL."""
    settings = {
        name.removeprefix("JAN_").lower(): value for name, value in oidc_stack.env.items()
        if name.startswith("JAN_OIDC_")
    }
    stack = make_stack(
        oidc_stack.env["JAN_DATABASE_URL"], **settings, oidc_redirect_uri=f"{oidc_stack.base_url}/auth/callback"
    )
    stack.start()
    yield stack
    stack.stop()


def test_another_replica_finishes_the_login(oidc_stack: Stack, replica: Stack, app: App, user: TestUser) -> None:
    authorize = httpx.get(start_login(oidc_stack, app.url)["authorization_url"])
    assert authorize.status_code == 302
    callback = urlsplit(authorize.headers["location"])
    assert f"{callback.scheme}://{callback.netloc}" == oidc_stack.base_url
    finished = httpx.get(f"{replica.base_url}{callback.path}?{callback.query}")
    assert finished.status_code == 302, finished.text
    tokens = fragment_tokens(finished.headers["location"])
    me = httpx.get(f"{replica.base_url}/auth/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200 and me.json()["username"] == user.preferred_username


def test_an_unreachable_provider_stops_the_start_with_what_to_do() -> None:
    with refused_port() as port:
        stack = make_stack(oidc_issuer=f"http://127.0.0.1:{port}", oidc_client_id=CLIENT_ID)
        with pytest.raises(RuntimeError) as error:
            stack.start()
    assert "JAN_OIDC_JWKS_URI" in str(error.value) and "unreachable" in str(error.value)
