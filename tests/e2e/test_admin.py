"""Admin roles through the real Envoy: the first admin from `jan-server admin create`, the role checked by the
gateway on /v1/admin/* for JWTs and API keys alike, granting and revoking it, forged role headers, and the
services' own check behind the gateway."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest

from server.gen.jan.admin.v1 import admin_pb2, admin_pb2_grpc
from tests.e2e.conftest import assert_error_envelope, guest_login
from tests.support.stack import ROOT, Stack

KEY_LINE = re.compile(r"^sk_live_[0-9a-f]{48}$", re.MULTILINE)
ME_PATHS = ["/v1/admin/users/me", "/llm/v1/admin/users/me"]


@dataclass(frozen=True)
class Admin:
    user_id: str
    email: str
    key: str


def run_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args], cwd=ROOT, env=stack.env, capture_output=True, text=True,
        timeout=120,
    )


def create_admin(stack: Stack, email: str | None = None, *extra: str) -> tuple[Admin, str]:
    email = email or f"admin-{uuid.uuid4().hex[:12]}@example.com"
    result = run_cli(stack, "admin", "create", "--email", email, *extra)
    assert result.returncode == 0, result.stderr
    key = KEY_LINE.search(result.stdout)
    user_id = re.search(r"\((user_\w+)\)", result.stdout)
    assert key and user_id, result.stdout
    return Admin(user_id=user_id.group(1), email=email.lower(), key=key.group(0)), result.stdout


@pytest.fixture
def admin(stack: Stack) -> Admin:
    return create_admin(stack)[0]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def refresh(http: httpx.Client, login: dict[str, str]) -> dict[str, str]:
    response = http.post("/v1/auth/refresh", json={"refresh_token": login["refresh_token"]})
    assert response.status_code == 200, response.text
    return {**login, **response.json()}


def claims(access_token: str) -> dict[str, Any]:
    payload = access_token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


def grant_admin(http: httpx.Client, admin: Admin, user_id: str) -> None:
    response = http.post(f"/v1/admin/users/{user_id}/roles", headers={"X-API-Key": admin.key}, json={"role": "admin"})
    assert response.status_code == 200, response.text
    assert response.json()["roles"] == ["admin"]


def wait_for_status(http: httpx.Client, headers: dict[str, str], status: int, within: float) -> httpx.Response:
    deadline = time.monotonic() + within
    while True:
        response = http.get("/v1/admin/users/me", headers=headers)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/admin/users/me", None),
        ("GET", "/llm/v1/admin/users/me", None),
        ("POST", "/v1/admin/users/me/roles", {"role": "admin"}),
        ("DELETE", "/llm/v1/admin/users/me/roles/admin", None),
        # No such route: still refused by the gateway, not a 404 that maps the admin API for strangers.
        ("GET", "/v1/admin/providers", None),
    ],
)
def test_guests_get_403_on_every_admin_route(
    http: httpx.Client, auth_headers: dict[str, str], method: str, path: str, body: dict[str, str] | None
) -> None:
    response = http.request(method, path, headers=auth_headers, json=body)
    error = assert_error_envelope(response, 403, type="permission_error", code="permission_denied")
    assert "admin" in str(error["message"])
    assert response.headers["x-auth-method"] == "jwt"


def test_no_credential_is_401_before_any_role_check(http: httpx.Client) -> None:
    assert_error_envelope(http.get("/v1/admin/users/me"), 401, type="auth_error", code="unauthorized")


def test_the_cli_makes_an_admin_whose_api_key_works(stack: Stack, http: httpx.Client) -> None:
    email = f"Root-{uuid.uuid4().hex[:8]}@Example.com"
    admin, output = create_admin(stack, email, "--name", "Root")
    assert output.startswith(f"Created admin {email.lower()} ({admin.user_id})")
    assert "shown only now" in output
    for path in ME_PATHS:
        for headers in ({"X-API-Key": admin.key}, bearer(admin.key)):
            response = http.get(path, headers=headers)
            assert response.status_code == 200, response.text
            assert response.json() == {
                "id": admin.user_id, "object": "user", "username": email.lower(), "name": "Root", "is_guest": False,
                "roles": ["admin"], "created_at": response.json()["created_at"],
            }
    me = http.get("/v1/auth/me", headers={"X-API-Key": admin.key}).json()
    assert (me["id"], me["auth_method"], me["roles"]) == (admin.user_id, "apikey", ["admin"])


def test_running_the_cli_again_promotes_the_same_user_with_another_key(stack: Stack, http: httpx.Client) -> None:
    first, _ = create_admin(stack)
    again, output = create_admin(stack, first.email)
    assert output.startswith(f"Promoted admin {first.email} ({first.user_id})")
    assert again.key != first.key
    for key in (first.key, again.key):
        assert http.get("/v1/admin/users/me", headers={"X-API-Key": key}).json()["id"] == first.user_id


def test_the_cli_explains_a_bad_email(stack: Stack) -> None:
    result = run_cli(stack, "admin", "create", "--email", "not-an-email")
    assert result.returncode == 2
    assert "'not-an-email' is not an email address" in result.stderr
    assert result.stdout == ""


def test_a_granted_role_reaches_the_access_token_at_refresh(stack: Stack, http: httpx.Client, admin: Admin) -> None:
    user = guest_login(stack)
    assert claims(user["access_token"])["roles"] == []
    grant_admin(http, admin, user["user_id"])
    # The token in hand still says what was true when it was minted.
    assert http.get("/v1/admin/users/me", headers=bearer(user["access_token"])).status_code == 403

    refreshed = refresh(http, user)
    assert claims(refreshed["access_token"])["roles"] == ["admin"]
    response = http.get("/v1/admin/users/me", headers=bearer(refreshed["access_token"]))
    assert response.status_code == 200, response.text
    assert (response.json()["id"], response.json()["roles"]) == (user["user_id"], ["admin"])
    assert http.get("/auth/me", headers=bearer(refreshed["access_token"])).json()["roles"] == ["admin"]


def test_forged_role_headers_are_ignored(stack: Stack, http: httpx.Client) -> None:
    guest = guest_login(stack)
    forged = {"x-user-roles": "admin", "x-jwt-payload": base64.urlsafe_b64encode(b'{"roles":["admin"]}').decode()}
    by_token = http.get("/v1/admin/users/me", headers={**bearer(guest["access_token"]), **forged})
    assert_error_envelope(by_token, 403, type="permission_error", code="permission_denied")

    created = http.post("/v1/auth/api-keys", headers=bearer(guest["access_token"]), json={"name": "k"})
    key_headers = {"X-API-Key": created.json()["key"], **forged}
    assert_error_envelope(http.get("/v1/admin/users/me", headers=key_headers), 403, type="permission_error")
    assert http.get("/v1/auth/me", headers=key_headers).json()["roles"] == []

    anonymous = http.get("/v1/admin/users/me", headers={**forged, "x-user-id": guest["user_id"]})
    assert_error_envelope(anonymous, 401, type="auth_error")


@pytest.mark.parametrize("path", ["/v1/%61dmin/users/me", "/v1//admin/users/me", "/v1/x/../admin/users/me",
                                  "/llm/v1/./admin/users/me"])
def test_other_spellings_of_an_admin_path_do_not_get_in(stack: Stack, path: str) -> None:
    token = guest_login(stack)["access_token"]
    # httpx would normalize the path itself; send the bytes as written.
    request = httpx.Request("GET", stack.base_url + path, headers=bearer(token), extensions={"target": path.encode()})
    with httpx.Client() as raw:
        response = raw.send(request)
    assert response.status_code in (403, 404), response.text


def test_revoking_the_role_closes_the_admin_routes(stack: Stack, http: httpx.Client, admin: Admin) -> None:
    # A second admin, by JWT, revokes the CLI admin's role: the key is refused within the key cache window.
    other = guest_login(stack)
    grant_admin(http, admin, other["user_id"])
    other = refresh(http, other)
    key_headers = {"X-API-Key": admin.key}
    assert http.get("/v1/admin/users/me", headers=key_headers).status_code == 200

    revoked_at = time.monotonic()
    response = http.delete(f"/v1/admin/users/{admin.user_id}/roles/admin", headers=bearer(other["access_token"]))
    assert response.status_code == 200, response.text
    assert response.json()["roles"] == []
    refused = wait_for_status(http, key_headers, 403, within=6)
    assert time.monotonic() - revoked_at <= 5.5
    assert_error_envelope(refused, 403, type="permission_error", code="permission_denied")
    # The key itself still works everywhere else.
    assert http.get("/v1/models", headers=key_headers).status_code == 200

    # And back: the CLI admin's key regains the role; then the JWT admin loses it at its next refresh.
    grant_admin_by_jwt = http.post(f"/v1/admin/users/{admin.user_id}/roles", headers=bearer(other["access_token"]),
                                   json={"role": "admin"})
    assert grant_admin_by_jwt.status_code == 200
    assert wait_for_status(http, key_headers, 200, within=6).status_code == 200
    revoke = http.delete(f"/v1/admin/users/{other['user_id']}/roles/admin", headers=key_headers)
    assert revoke.json()["roles"] == []
    assert http.get("/v1/admin/users/me", headers=bearer(other["access_token"])).status_code == 200
    refreshed = refresh(http, other)
    assert claims(refreshed["access_token"])["roles"] == []
    assert http.get("/v1/admin/users/me", headers=bearer(refreshed["access_token"])).status_code == 403


def test_role_changes_are_validated(stack: Stack, http: httpx.Client, admin: Admin) -> None:
    headers = {"X-API-Key": admin.key}
    own = http.delete("/v1/admin/users/me/roles/admin", headers=headers)
    assert "your own admin role" in str(assert_error_envelope(own, 400, type="invalid_request_error")["message"])
    unknown_role = http.post("/v1/admin/users/me/roles", headers=headers, json={"role": "root"})
    assert_error_envelope(unknown_role, 400, type="invalid_request_error", code="invalid_value", param="role")
    missing = http.post("/v1/admin/users/me/roles", headers=headers, json={})
    assert_error_envelope(missing, 400, type="invalid_request_error", code="missing_required_parameter", param="role")
    nobody = http.get("/v1/admin/users/user_doesnotexist", headers=headers)
    assert_error_envelope(nobody, 404, type="not_found_error", code="not_found", param="user_id")
    guest = guest_login(stack)
    # Granting twice and revoking what is not there are both fine.
    grant_admin(http, admin, guest["user_id"])
    grant_admin(http, admin, guest["user_id"])
    for _ in range(2):
        revoke = http.delete(f"/v1/admin/users/{guest['user_id']}/roles/admin", headers=headers)
        assert (revoke.status_code, revoke.json()["roles"]) == (200, [])


def test_native_grpc_needs_the_role_at_the_gateway_and_in_the_service(stack: Stack, admin: Admin) -> None:
    guest = guest_login(stack)
    request = admin_pb2.GetUserRequest(user_id="me")
    gateway = stack.base_url.removeprefix("http://")
    with grpc.insecure_channel(gateway) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetUser(request, metadata=[("authorization", f"Bearer {guest['access_token']}")], timeout=10)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        user = stub.GetUser(request, metadata=[("x-api-key", admin.key)], timeout=10)
        assert (user.id, list(user.roles)) == (admin.user_id, ["admin"])
    # Past the gateway, the service checks the role itself.
    with grpc.insecure_channel(stack.grpc_target) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetUser(request, metadata=[("x-user-id", guest["user_id"])], timeout=10)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "'admin' role" in str(refused.value.details())
