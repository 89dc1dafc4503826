"""API keys through the real Envoy (ext_authz to the auth service): create, use with both header forms (httpx and
the openai SDK), list, revoke, expiry, the per-user limit, two-user isolation, and spoofed identity headers."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import MODEL, assert_error_envelope, guest_login
from tests.support.stack import Stack

PATHS = ["/auth/api-keys", "/v1/auth/api-keys", "/llm/auth/api-keys"]
KEY_FORMAT = re.compile(r"sk_live_[0-9a-f]{48}")
DAY = 86400


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create_key(
    http: httpx.Client, user: dict[str, str], path: str = "/auth/api-keys", **payload: Any
) -> dict[str, Any]:
    response = http.post(path, headers=bearer(user["access_token"]), json={"name": "script", **payload})
    assert response.status_code == 201, response.text
    return response.json()


def list_keys(http: httpx.Client, user: dict[str, str], **params: Any) -> dict[str, Any]:
    response = http.get("/auth/api-keys", headers=bearer(user["access_token"]), params=params)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for_401(http: httpx.Client, headers: dict[str, str], within: float) -> httpx.Response:
    deadline = time.monotonic() + within
    while True:
        response = http.get("/v1/models", headers=headers)
        if response.status_code == 401 or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


@pytest.mark.parametrize("path", PATHS)
def test_create_answers_201_and_shows_the_key_once(http: httpx.Client, guest: dict[str, str], path: str) -> None:
    before = int(time.time())
    created = create_key(http, guest, path)
    assert set(created) == {"id", "name", "prefix", "suffix", "tier", "created_at", "expires_at", "status", "key"}
    assert KEY_FORMAT.fullmatch(created["key"])
    assert (created["name"], created["prefix"], created["suffix"]) == ("script", "sk_live", created["key"][-4:])
    assert (created["status"], created["tier"]) == ("active", "pro")
    assert before <= created["created_at"] <= time.time()
    assert created["expires_at"] - created["created_at"] == 90 * DAY

    listed = list_keys(http, guest)["data"][0]
    assert listed["id"] == created["id"] and "key" not in listed
    assert created["key"] not in http.get(path, headers=bearer(guest["access_token"])).text


def test_lifetime_in_days_or_as_the_originals_go_duration(http: httpx.Client, guest: dict[str, str]) -> None:
    in_days = create_key(http, guest, expires_in_days=7)
    assert in_days["expires_at"] - in_days["created_at"] == 7 * DAY
    go_duration = create_key(http, guest, expires_in=48 * 3600 * 10**9)
    assert go_duration["expires_at"] - go_duration["created_at"] == 2 * DAY


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{}", "name"),
        (b'{"name": ""}', "name"),
        (b'{"name": "' + b"x" * 129 + b'"}', "name"),
        (b'{"name": "x", "expires_in_days": 0}', "expires_in_days"),
        (b'{"name": "x", "expires_in_days": 100000}', "expires_in_days"),
        (b'{"name": "x", "expires_in": 1}', "expires_in"),
    ],
)
def test_invalid_create_requests_are_400_naming_the_field(
    http: httpx.Client, guest: dict[str, str], body: bytes, param: str
) -> None:
    response = http.post("/auth/api-keys", headers=bearer(guest["access_token"]), content=body)
    assert_error_envelope(response, 400, type="invalid_request_error", param=param)


def test_a_body_with_trailing_garbage_is_accepted_like_the_original(http: httpx.Client, guest: dict[str, str]) -> None:
    response = http.post("/auth/api-keys", headers=bearer(guest["access_token"]), content=b'{"name": "ci"}}garbage')
    assert response.status_code == 201 and response.json()["name"] == "ci"


@pytest.mark.parametrize("header", ["X-API-Key", "Authorization"])
def test_a_key_authenticates_as_its_user(http: httpx.Client, guest: dict[str, str], header: str) -> None:
    key = create_key(http, guest)["key"]
    headers = {"X-API-Key": key} if header == "X-API-Key" else bearer(key)
    me = http.get("/auth/me", headers=headers)
    assert me.status_code == 200, me.text
    assert (me.json()["id"], me.json()["auth_method"]) == (guest["user_id"], "apikey")
    assert me.headers["x-auth-method"] == "apikey"
    models = http.get("/v1/models", headers=headers)
    assert models.status_code == 200 and models.json()["data"][0]["id"] == MODEL


def test_the_openai_sdk_works_with_a_key(stack: Stack, http: httpx.Client, guest: dict[str, str]) -> None:
    key = create_key(http, guest)["key"]
    with openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=key, max_retries=0) as sdk:
        assert [model.id for model in sdk.models.list()] == [MODEL]
        raw = sdk.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "Say hi"}], max_tokens=4
        )
        assert raw.headers["x-auth-method"] == "apikey"
        assert raw.parse().choices[0].message.role == "assistant"
        chunks = list(sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Say hi"}], max_tokens=4, stream=True
        ))
        assert chunks and chunks[0].object == "chat.completion.chunk"


def test_jwt_responses_say_so(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    assert http.get("/v1/models", headers=auth_headers).headers["x-auth-method"] == "jwt"
    assert http.get("/auth/me", headers=auth_headers).json()["auth_method"] == "jwt"
    assert "x-auth-method" not in http.get("/healthz").headers


def test_list_is_paged_newest_first_with_statuses_and_never_the_key(http: httpx.Client, guest: dict[str, str]) -> None:
    assert list_keys(http, guest) == {
        "object": "list", "data": [], "items": [], "has_more": False, "total": 0, "total_count": 0
    }
    first, second, third = (create_key(http, guest, name=f"k{i}") for i in range(3))
    http.delete(f"/auth/api-keys/{second['id']}", headers=bearer(guest["access_token"]))

    page = list_keys(http, guest, limit=2)
    assert [key["id"] for key in page["data"]] == [third["id"], second["id"]]
    assert page["items"] == page["data"]
    assert (page["first_id"], page["last_id"], page["has_more"], page["total"], page["total_count"]) == (
        third["id"], second["id"], True, 3, 3
    )  # fmt: skip
    assert [key["status"] for key in page["data"]] == ["active", "revoked"]
    assert "revoked_at" in page["data"][1] and "revoked_at" not in page["data"][0]
    assert all("key" not in key and "key_hash" not in key for key in page["data"])

    rest = list_keys(http, guest, limit=2, after=second["id"])
    assert [key["id"] for key in rest["data"]] == [first["id"]] and rest["has_more"] is False
    oldest_first = list_keys(http, guest, order="asc")["data"]
    assert [key["id"] for key in oldest_first] == [first["id"], second["id"], third["id"]]
    assert [key["id"] for key in list_keys(http, guest, limit=1, offset=2)["data"]] == [first["id"]]


def test_last_used_at_appears_once_the_key_is_used(http: httpx.Client, guest: dict[str, str]) -> None:
    created = create_key(http, guest)
    assert "last_used_at" not in list_keys(http, guest)["data"][0]
    http.get("/v1/models", headers={"X-API-Key": created["key"]})
    used = list_keys(http, guest)["data"][0]
    assert abs(used["last_used_at"] - time.time()) < 10


def test_a_revoked_key_is_refused_within_5_seconds(stack: Stack, http: httpx.Client, guest: dict[str, str]) -> None:
    created = create_key(http, guest)
    headers = {"X-API-Key": created["key"]}
    assert http.get("/v1/models", headers=headers).status_code == 200

    revoked_at = time.monotonic()
    response = http.delete(f"/llm/auth/api-keys/{created['id']}", headers=bearer(guest["access_token"]))
    assert response.status_code == 204 and response.content == b""
    assert "content-type" not in response.headers

    refused = wait_for_401(http, headers, within=6)
    assert time.monotonic() - revoked_at <= 5.5
    error = assert_error_envelope(refused, 401, type="auth_error", code="invalid_api_key")
    assert "revoked" in str(error["message"])
    with openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=created["key"], max_retries=0) as sdk:
        with pytest.raises(openai.AuthenticationError) as raised:
            sdk.models.list()
    assert raised.value.code == "invalid_api_key"
    assert list_keys(http, guest)["data"][0]["status"] == "revoked"


def test_an_expired_key_is_refused(http: httpx.Client, guest: dict[str, str]) -> None:
    created = create_key(http, guest, expires_in=2 * 10**9)
    headers = bearer(created["key"])
    assert http.get("/v1/models", headers=headers).status_code == 200
    time.sleep(max(0.0, created["expires_at"] + 1 - time.time()))
    error = assert_error_envelope(http.get("/v1/models", headers=headers), 401, type="auth_error",
                                  code="invalid_api_key")
    assert "expired" in str(error["message"])
    assert list_keys(http, guest)["data"][0]["status"] == "expired"


def test_at_most_five_active_keys(http: httpx.Client, guest: dict[str, str]) -> None:
    keys = [create_key(http, guest) for _ in range(5)]
    response = http.post("/auth/api-keys", headers=bearer(guest["access_token"]), json={"name": "sixth"})
    error = assert_error_envelope(response, 400, type="invalid_request_error", code="api_key_limit_reached")
    assert "limit" in str(error["message"])
    http.delete(f"/auth/api-keys/{keys[0]['id']}", headers=bearer(guest["access_token"]))
    create_key(http, guest)


def test_another_users_key_is_invisible_and_404(stack: Stack, http: httpx.Client) -> None:
    alice, bob = guest_login(stack), guest_login(stack)
    alices = create_key(http, alice)
    assert list_keys(http, bob)["data"] == []
    response = http.delete(f"/auth/api-keys/{alices['id']}", headers=bearer(bob["access_token"]))
    assert_error_envelope(response, 404, type="not_found_error", code="not_found")
    unknown = http.delete("/auth/api-keys/key_doesnotexist", headers=bearer(alice["access_token"]))
    assert_error_envelope(unknown, 404, type="not_found_error")
    assert list_keys(http, alice)["data"][0]["status"] == "active"


def test_identity_headers_sent_with_a_key_are_ignored(stack: Stack, http: httpx.Client) -> None:
    alice, bob = guest_login(stack), guest_login(stack)
    key = create_key(http, alice)["key"]
    spoofed = {"X-API-Key": key, "x-user-id": bob["user_id"], "x-auth-method": "jwt",
               "x-jwt-payload": "e30", "x-api-key-id": "key_other", "x-api-key-tier": "enterprise"}
    me = http.get("/auth/me", headers=spoofed)
    assert (me.json()["id"], me.json()["auth_method"]) == (alice["user_id"], "apikey")
    assert me.headers["x-ratelimit-limit-minute"] != "600"  # not the enterprise bucket the client asked for
    # Without a credential, spoofed identity headers get nobody in.
    nobody = http.get("/auth/me", headers={"x-user-id": bob["user_id"], "x-auth-method": "apikey"})
    assert_error_envelope(nobody, 401, type="auth_error", code="unauthorized")


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "unauthorized"),
        ({"Authorization": "Bearer not-a-jwt-or-key"}, "unauthorized"),
        ({"X-API-Key": "sk_live_" + "0" * 48}, "invalid_api_key"),
        ({"Authorization": "Bearer sk_live_" + "0" * 48}, "invalid_api_key"),
        ({"X-API-Key": "sk_your_api_key_here"}, "invalid_api_key"),
    ],
)
def test_missing_or_invalid_credentials_are_401(http: httpx.Client, headers: dict[str, str], code: str) -> None:
    response = http.get("/v1/models", headers=headers)
    assert_error_envelope(response, 401, type="auth_error", code=code)
    assert "x-auth-method" not in response.headers


def test_public_routes_ignore_whatever_credential_is_sent(http: httpx.Client) -> None:
    for headers in ({"X-API-Key": "sk_live_" + "0" * 48}, {"Authorization": "Bearer junk"}):
        assert http.get("/healthz", headers=headers).json() == {"status": "ok"}
        assert http.post("/auth/guest-login", headers=headers).status_code == 201
