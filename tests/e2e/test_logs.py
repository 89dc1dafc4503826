"""JSON logs of a realistic session: one access line per request that names it, and no credential or prompt text
anywhere in the server's log (Envoy's forwarded log included)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.test_admin import create_admin
from tests.support.stack import Stack, make_stack


@pytest.fixture(scope="module", params=["info", "debug"])
def json_stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    """At info, as deployed; at debug, Envoy's and every library's debug output goes through the filter too."""
    stack = make_stack(log_format="json", log_level=request.param.upper(), envoy_log_level=request.param)
    stack.start()
    yield stack
    stack.stop()


def _call(http: httpx.Client, method: str, path: str, request_ids: list[str], **kwargs: Any) -> httpx.Response:
    response = http.request(method, path, **kwargs)
    request_ids.append(response.headers["x-request-id"])
    return response


def test_a_session_leaves_request_ids_but_no_secrets_in_the_logs(json_stack: Stack, tmp_path: Path) -> None:
    prompt = f"Describe the zebra-quartz-{uuid.uuid4().hex[:10]} lighthouse"
    query = f"whereabouts of ferret-opal-{uuid.uuid4().hex[:10]}"
    request_ids: list[str] = []
    with httpx.Client(base_url=json_stack.base_url, timeout=120) as http:
        login = _call(http, "POST", "/llm/auth/guest-login", request_ids).json()
        refreshed = _call(http, "POST", "/v1/auth/refresh", request_ids,
                          json={"refresh_token": login["refresh_token"]}).json()
        bearer = {"Authorization": f"Bearer {refreshed['access_token']}"}
        created = _call(http, "POST", "/v1/auth/api-keys", request_ids, headers=bearer, json={"name": "logs"})
        assert created.status_code in (200, 201), created.text
        api_key = created.json()["key"]
        chat = _call(http, "POST", "/v1/chat/completions", request_ids, headers={"X-API-Key": api_key},
                     json={"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": 8})
        assert chat.status_code == 200, chat.text
        tool = _call(http, "POST", "/v1/mcp", request_ids,
                     headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json, text/event-stream"},
                     json={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                           "params": {"name": "file_search_query", "arguments": {"query": query}}})
        assert tool.status_code == 200 and tool.json()["result"]["isError"] is False, tool.text
        admin, _ = create_admin(json_stack)
        me = _call(http, "GET", "/v1/admin/users/me", request_ids, headers={"X-API-Key": admin.key})
        assert me.status_code == 200, me.text
        # A forged token and a wrong password-like key are refused; their values must not be logged either.
        forged = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.Zm9yZ2Vk"
        assert _call(http, "GET", "/v1/models", request_ids,
                     headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    json_stack.stop()
    log_file = tmp_path / "jan-server.log"
    log_file.write_text("".join(json_stack.output))
    logs = log_file.read_text()

    secrets = {
        "access token": login["access_token"], "refreshed access token": refreshed["access_token"],
        "refresh token": login["refresh_token"], "rotated refresh token": refreshed["refresh_token"],
        "API key": api_key, "admin's API key": admin.key, "forged token": forged, "prompt": prompt, "query": query,
    }
    assert [name for name, secret in secrets.items() if secret in logs] == []

    access = [line for line in map(_json, logs.splitlines()) if line and line.get("logger") == "jan.access"]
    by_request = {line["request_id"]: line for line in access}
    assert set(request_ids) - set(by_request) == {request_ids[-1]}  # the forged token never reached a service
    chat_line = by_request[request_ids[3]]
    assert chat_line["rpc"] == "jan.llm.v1.LlmService/CreateChatCompletion"
    assert (chat_line["http_method"], chat_line["http_path"], chat_line["status"]) == (
        "POST", "/v1/chat/completions", 200
    )
    assert chat_line["user_id"] == login["user_id"] and chat_line["latency_ms"] > 0
    assert by_request[request_ids[0]]["status"] == 201
    assert by_request[request_ids[5]]["user_id"] == admin.user_id


def _json(line: str) -> dict[str, Any] | None:
    try:
        parsed = json.loads(line)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None
