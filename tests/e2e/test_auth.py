"""Guest login, refresh, JWKS and identity, through Envoy (README §Auth)."""

from __future__ import annotations

import time
import uuid

import httpx
import jwt
import openai
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.e2e.conftest import assert_error_envelope, guest_login
from tests.support.stack import Stack

GUEST_LOGIN_PATHS = ["/llm/auth/guest-login", "/auth/guest-login", "/v1/auth/guest-login"]


@pytest.mark.parametrize("path", GUEST_LOGIN_PATHS)
def test_guest_login_creates_a_user_and_a_token_pair(http: httpx.Client, path: str) -> None:
    response = http.post(path)
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"user_id", "username", "principal_id", "access_token", "refresh_token", "token_type",
                         "expires_in"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert body["principal_id"] == body["user_id"]
    assert body["username"].startswith("guest-")

    me = http.get("/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200
    assert me.json()["id"] == body["user_id"]
    assert me.json()["auth_method"] == "jwt"
    assert me.json()["is_guest"] is True


def test_each_guest_login_is_a_new_user(http: httpx.Client) -> None:
    assert http.post("/auth/guest-login").json()["user_id"] != http.post("/auth/guest-login").json()["user_id"]


def test_access_token_is_an_es256_jwt_verifiable_with_the_published_jwks(stack: Stack, http: httpx.Client) -> None:
    token = guest_login(stack)["access_token"]
    jwks = http.get("/.well-known/jwks.json")
    assert jwks.status_code == 200
    keys = jwks.json()["keys"]
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    key = next(k for k in keys if k["kid"] == header["kid"])
    assert "n" not in key and key["kty"] == "EC"
    claims = jwt.decode(token, jwt.PyJWK(key).key, algorithms=["ES256"], audience="jan-api")
    assert claims["exp"] - claims["iat"] == 300


REFRESH_CALLS = [
    ("POST", "/llm/auth/refresh"),
    ("POST", "/auth/refresh-token"),
    ("POST", "/v1/auth/refresh"),
    ("GET", "/auth/refresh-token"),
]


def _refresh(http: httpx.Client, method: str, path: str, refresh_token: str) -> httpx.Response:
    if method == "GET":
        return http.get(path, headers={"Authorization": f"Bearer {refresh_token}"})
    return http.post(path, json={"refresh_token": refresh_token})


@pytest.mark.parametrize(("method", "path"), REFRESH_CALLS)
def test_refresh_returns_a_new_pair(stack: Stack, http: httpx.Client, method: str, path: str) -> None:
    login = guest_login(stack)
    response = _refresh(http, method, path, login["refresh_token"])
    assert response.status_code == 200, response.text
    fresh = response.json()
    assert fresh["refresh_token"] != login["refresh_token"]
    assert fresh["token_type"] == "Bearer" and fresh["expires_in"] == 300
    me = http.get("/v1/auth/me", headers={"Authorization": f"Bearer {fresh['access_token']}"})
    assert me.json()["id"] == login["user_id"]


def test_a_spent_refresh_token_is_rejected_and_revokes_its_family(stack: Stack, http: httpx.Client) -> None:
    login = guest_login(stack)
    second = _refresh(http, "POST", "/llm/auth/refresh", login["refresh_token"]).json()
    reuse = _refresh(http, "POST", "/llm/auth/refresh", login["refresh_token"])
    assert_error_envelope(reuse, 401, type="auth_error")
    # The theft signal revoked the whole family, including the token issued after the spent one.
    assert _refresh(http, "POST", "/llm/auth/refresh", second["refresh_token"]).status_code == 401


def test_refresh_without_a_token_is_a_400(http: httpx.Client) -> None:
    assert_error_envelope(http.post("/llm/auth/refresh", json={}), 400, type="invalid_request_error",
                          param="refresh_token")


def test_unknown_refresh_token_is_a_401(http: httpx.Client) -> None:
    assert_error_envelope(http.post("/llm/auth/refresh", json={"refresh_token": "rt_nope"}), 401, type="auth_error")


def _server_key(stack: Stack) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key((stack.data_dir / "jwt-signing-key.pem").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _forge(stack: Stack, guest: dict[str, str], *, key: object = None, algorithm: str = "ES256",
           **claims: object) -> str:
    kid = jwt.get_unverified_header(guest["access_token"])["kid"]
    now = int(time.time())
    payload = {"iss": "jan-server", "aud": "jan-api", "sub": guest["user_id"], "iat": now, "exp": now + 300,
               "jti": uuid.uuid4().hex, **claims}
    return jwt.encode(payload, key if key is not None else _server_key(stack), algorithm=algorithm,
                      headers={"kid": kid})


def _bad_tokens(stack: Stack, guest: dict[str, str]) -> dict[str, str]:
    now = int(time.time())
    other_key = ec.generate_private_key(ec.SECP256R1())
    unsigned = jwt.encode({"sub": guest["user_id"], "iss": "jan-server", "aud": "jan-api", "exp": now + 300},
                          key=None, algorithm="none")
    return {
        "malformed": "eyJnot-a-jwt",
        "expired": _forge(stack, guest, iat=now - 400, exp=now - 30),
        "other key": _forge(stack, guest, key=other_key),
        "alg none": unsigned,
        "wrong issuer": _forge(stack, guest, iss="someone-else"),
        "wrong audience": _forge(stack, guest, aud="other-api"),
        "not yet valid": _forge(stack, guest, nbf=now + 120),
        "never expires": _forge_without_exp(stack, guest),
        "not a jwt": "sk-plainly-not-a-token",
    }


def _forge_without_exp(stack: Stack, guest: dict[str, str]) -> str:
    kid = jwt.get_unverified_header(guest["access_token"])["kid"]
    payload = {"iss": "jan-server", "aud": "jan-api", "sub": guest["user_id"], "iat": int(time.time())}
    return jwt.encode(payload, _server_key(stack), algorithm="ES256", headers={"kid": kid})


def test_the_gateway_accepts_a_token_it_signed(stack: Stack, http: httpx.Client, guest: dict[str, str]) -> None:
    response = http.get("/v1/models", headers={"Authorization": f"Bearer {_forge(stack, guest)}"})
    assert response.status_code == 200


@pytest.mark.parametrize("case", ["missing", "malformed", "expired", "other key", "alg none", "wrong issuer",
                                  "wrong audience", "not yet valid", "never expires", "not a jwt"])
def test_bad_tokens_get_401_from_the_gateway(stack: Stack, guest: dict[str, str], case: str) -> None:
    token = None if case == "missing" else _bad_tokens(stack, guest)[case]
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    response = httpx.get(f"{stack.base_url}/v1/models", headers=headers)
    assert_error_envelope(response, 401, type="auth_error", code="unauthorized")

    if token is not None:  # the SDK itself refuses to send a request without a key
        sdk = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=token, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            sdk.models.list()


def test_only_exact_public_paths_skip_authentication(http: httpx.Client, guest: dict[str, str]) -> None:
    assert_error_envelope(http.post("/auth/guest-loginX"), 401, type="auth_error")
    for sneaky in ("/healthz/../v1/models", "//v1/models", "/healthz/%2e%2e/v1/models"):
        assert http.get(sneaky).status_code in (401, 404), sneaky
    # Tokens count only in the Authorization header, never in the query string (which ends up in logs).
    response = http.get("/v1/models", params={"access_token": guest["access_token"]})
    assert_error_envelope(response, 401, type="auth_error")


def test_identity_headers_sent_by_clients_are_ignored(http: httpx.Client, stack: Stack) -> None:
    alice, bob = guest_login(stack), guest_login(stack)
    spoofed = http.get("/auth/me", headers={"Authorization": f"Bearer {alice['access_token']}",
                                            "x-user-id": bob["user_id"], "x-auth-method": "apikey"})
    assert spoofed.json()["id"] == alice["user_id"]
    assert spoofed.json()["auth_method"] == "jwt"
    assert http.get("/auth/me", headers={"x-user-id": bob["user_id"]}).status_code == 401


def test_health_routes_need_no_token(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").json() == {"status": "ready"}
