"""The MCP endpoint (streamable HTTP transport) through Envoy, spoken as raw JSON-RPC with httpx."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import assert_error_envelope, guest_login
from tests.support.stack import Stack

SDK_ACCEPT = "application/json, text/event-stream"
VERSIONS = ["2025-03-26", "2025-06-18", "2025-11-25"]


def post(http: httpx.Client, headers: dict[str, str], message: Any, *, path: str = "/v1/mcp",
         **extra: str) -> httpx.Response:
    return http.post(path, content=json.dumps(message), headers={
        **headers, "Content-Type": "application/json", "Accept": SDK_ACCEPT, **extra,
    })


def request(method: str, params: dict[str, Any] | None = None, id: int | str = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def initialize(http: httpx.Client, headers: dict[str, str], version: str = "2025-11-25") -> tuple[str, dict[str, Any]]:
    response = post(http, headers, request("initialize", {
        "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "test", "version": "1"},
    }))
    assert response.status_code == 200, response.text
    session_id = response.headers["mcp-session-id"]
    negotiated = response.json()["result"]["protocolVersion"]
    assert post(http, headers, {"jsonrpc": "2.0", "method": "notifications/initialized"},
                **in_session(session_id, negotiated)).status_code == 202
    return session_id, response.json()


def in_session(session_id: str, version: str = "2025-11-25") -> dict[str, str]:
    return {"Mcp-Session-Id": session_id, "MCP-Protocol-Version": version}


def tools_list(http: httpx.Client, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = post(http, headers, request("tools/list"))
    assert response.status_code == 200, response.text
    tools: list[dict[str, Any]] = response.json()["result"]["tools"]
    return tools


def tool_with_required_argument(http: httpx.Client, headers: dict[str, str]) -> tuple[str, str]:
    for tool in tools_list(http, headers):
        if tool["inputSchema"].get("required"):
            return tool["name"], tool["inputSchema"]["required"][0]
    pytest.skip("no tool with a required argument is registered")


@pytest.mark.parametrize(("offered", "negotiated"), [
    *((version, version) for version in VERSIONS),
    ("2024-11-05", "2025-11-25"),  # older than we speak: we offer our newest
    ("2099-01-01", "2025-11-25"),  # newer than we know
])
def test_initialize_negotiates_the_version_and_issues_a_session(
    http: httpx.Client, auth_headers: dict[str, str], offered: str, negotiated: str
) -> None:
    session_id, answer = initialize(http, auth_headers, offered)
    assert answer["id"] == 1 and answer["jsonrpc"] == "2.0"
    result = answer["result"]
    assert result["protocolVersion"] == negotiated
    assert result["serverInfo"]["name"] == "jan-server" and result["serverInfo"]["version"]
    assert "tools" in result["capabilities"]
    assert session_id.isascii() and len(session_id) >= 32
    ping = post(http, auth_headers, request("ping", id=2), **in_session(session_id, negotiated))
    assert ping.json() == {"jsonrpc": "2.0", "id": 2, "result": {}}


def test_sse_when_the_client_accepts_only_event_streams(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    response = post(http, auth_headers, request("ping", id="p1"), Accept="text/event-stream")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.startswith("event: message\ndata: ") and response.text.endswith("\n\n")
    data = response.text.split("data: ", 1)[1]
    assert json.loads(data) == {"jsonrpc": "2.0", "id": "p1", "result": {}}
    tools = post(http, auth_headers, request("tools/list"), Accept="text/event-stream")
    events = [event for event in tools.text.split("\n\n") if event]
    assert len(events) == 1 and "tools" in json.loads(events[0].split("data: ", 1)[1])["result"]


def test_json_answer_for_the_sdk_accept_header_and_for_curl(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    for accept in (SDK_ACCEPT, "*/*", "application/json"):
        response = post(http, auth_headers, request("ping"), Accept=accept)
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["result"] == {}


def test_notifications_and_client_responses_get_202_without_a_body(
    http: httpx.Client, auth_headers: dict[str, str]
) -> None:
    for message in ({"jsonrpc": "2.0", "method": "notifications/initialized"},
                    {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7}},
                    {"jsonrpc": "2.0", "id": 5, "result": {}}):
        response = post(http, auth_headers, message)
        assert response.status_code == 202 and response.content == b""


def test_tools_list_describes_every_tool(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    session_id, _ = initialize(http, auth_headers)
    response = post(http, auth_headers, request("tools/list"), **in_session(session_id))
    tools = response.json()["result"]["tools"]
    typed = {tool["name"]: tool for tool in http.get("/v1/mcp/tools", headers=auth_headers).json()["tools"]}
    assert [tool["name"] for tool in tools] == list(typed)
    for tool in tools:
        assert set(tool) >= {"name", "description", "inputSchema", "outputSchema"}
        assert tool["inputSchema"]["type"] == "object" and tool["outputSchema"]["type"] == "object"
        # A tool that cannot run says so, and only then.
        assert ("(unavailable: " in tool["description"]) == (not typed[tool["name"]]["available"])


def test_a_request_without_id_is_answered_with_a_null_id(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    """The user's API reference calls tools/call this way (no id, no initialize) and expects the result."""
    response = post(http, auth_headers, {"jsonrpc": "2.0", "method": "tools/list"})
    assert response.status_code == 200
    answer = response.json()
    assert answer["id"] is None and "tools" in answer["result"]


def test_unknown_tool_is_invalid_params(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    response = post(http, auth_headers, request("tools/call", {"name": "no_such_tool", "arguments": {}}))
    assert response.status_code == 200
    error = response.json()["error"]
    assert error["code"] == -32602 and "no_such_tool" in error["message"]


@pytest.mark.parametrize("version", ["2025-03-26", "2025-06-18"])
def test_bad_arguments_are_invalid_params_naming_the_argument(
    http: httpx.Client, auth_headers: dict[str, str], version: str
) -> None:
    name, argument = tool_with_required_argument(http, auth_headers)
    session_id, _ = initialize(http, auth_headers, version)
    for arguments in ({}, {argument: {"not": "valid"}}):
        response = post(http, auth_headers, request("tools/call", {"name": name, "arguments": arguments}),
                        **in_session(session_id, version))
        error = response.json()["error"]
        assert error["code"] == -32602 and f"'{argument}'" in error["message"]
    # Stateless clients name no version: 2025-03-26 rules.
    stateless = post(http, auth_headers, request("tools/call", {"name": name, "arguments": {}}))
    assert stateless.json()["error"]["code"] == -32602


def test_bad_arguments_are_a_tool_error_under_2025_11_25(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    """SEP-1303: the model must see why its arguments were refused."""
    name, argument = tool_with_required_argument(http, auth_headers)
    session_id, _ = initialize(http, auth_headers, "2025-11-25")
    response = post(http, auth_headers, request("tools/call", {"name": name, "arguments": {}}),
                    **in_session(session_id))
    result = response.json()["result"]
    assert result["isError"] is True and "structuredContent" not in result
    assert f"'{argument}'" in result["content"][0]["text"]


@pytest.mark.parametrize("params", [{"arguments": {}}, {"name": 5}, {"name": "x", "arguments": [1]}])
def test_malformed_tools_call_params(http: httpx.Client, auth_headers: dict[str, str], params: dict[str, Any]) -> None:
    assert post(http, auth_headers, request("tools/call", params)).json()["error"]["code"] == -32602
    not_an_object = post(http, auth_headers, {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": [1]})
    assert not_an_object.json()["error"]["code"] == -32602


def test_malformed_json_is_a_parse_error(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    for body in (b'{"jsonrpc": "2.0", "id": 1, "method": ', b"", b"\xff\xfe"):
        response = http.post("/v1/mcp", content=body, headers={**auth_headers, "Content-Type": "application/json"})
        assert response.status_code == 400
        assert response.headers["content-type"].startswith("application/json")
        answer = response.json()
        assert answer["jsonrpc"] == "2.0" and answer["id"] is None and answer["error"]["code"] == -32700


def test_invalid_requests(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    for message in ({"id": 1, "method": "ping"}, {"jsonrpc": "2.0", "id": 1, "method": 5}, "ping",
                    {"jsonrpc": "2.0", "id": True, "method": "ping"}):
        response = post(http, auth_headers, message)
        assert response.status_code == 400 and response.json()["error"]["code"] == -32600


def test_unknown_method(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    for method in ("resources/list", "prompts/call", "server/discover"):
        response = post(http, auth_headers, request(method, id="m"))
        assert response.status_code == 200
        assert response.json() == {"jsonrpc": "2.0", "id": "m",
                                   "error": {"code": -32601, "message": f"Method not found: {method}"}}


def test_protocol_version_header_is_checked(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    for version in ("2024-11-05", "2026-07-28", "not-a-version"):
        response = post(http, auth_headers, request("ping"), **{"MCP-Protocol-Version": version})
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == -32600 and version in error["message"]
    assert post(http, auth_headers, request("ping"), **{"MCP-Protocol-Version": "2025-06-18"}).status_code == 200


def test_batches_only_under_2025_03_26(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    batch = [request("ping", id=1), {"jsonrpc": "2.0", "method": "notifications/initialized"},
             request("nope", id=2)]
    session_id, _ = initialize(http, auth_headers, "2025-03-26")
    response = post(http, auth_headers, batch, **in_session(session_id, "2025-03-26"))
    assert response.status_code == 200
    assert response.json() == [
        {"jsonrpc": "2.0", "id": 1, "result": {}},
        {"jsonrpc": "2.0", "id": 2, "error": {"code": -32601, "message": "Method not found: nope"}},
    ]
    only_notifications = post(http, auth_headers, [batch[1]], **in_session(session_id, "2025-03-26"))
    assert only_notifications.status_code == 202
    initialize_in_batch = post(http, auth_headers, [request("initialize", {"protocolVersion": "2025-03-26"})])
    assert initialize_in_batch.json()[0]["error"]["code"] == -32600
    assert post(http, auth_headers, []).status_code == 400
    for version in ("2025-06-18", "2025-11-25"):
        refused = post(http, auth_headers, batch, **{"MCP-Protocol-Version": version})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == -32600


def test_unknown_session_is_404(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    response = post(http, auth_headers, request("ping", id=9), **in_session("mcps_doesnotexist"))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == -32001 and response.json()["id"] == 9


def test_delete_ends_the_session(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    session_id, _ = initialize(http, auth_headers)
    ended = http.delete("/v1/mcp", headers={**auth_headers, **in_session(session_id)})
    assert ended.status_code == 204 and ended.content == b""
    assert post(http, auth_headers, request("ping"), **in_session(session_id)).status_code == 404
    assert http.delete("/mcp", headers={**auth_headers, **in_session(session_id)}).status_code == 404
    assert http.delete("/v1/mcp", headers=auth_headers).status_code == 400


def test_another_users_session_is_not_honoured(
    stack: Stack, http: httpx.Client, auth_headers: dict[str, str]
) -> None:
    session_id, _ = initialize(http, auth_headers)
    intruder = {"Authorization": f"Bearer {guest_login(stack)['access_token']}"}
    assert post(http, intruder, request("ping"), **in_session(session_id)).status_code == 404
    assert http.delete("/v1/mcp", headers={**intruder, **in_session(session_id)}).status_code == 404
    # ... and the owner's session survives the attempt.
    assert post(http, auth_headers, request("ping"), **in_session(session_id)).status_code == 200


def test_get_is_405(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    session_id, _ = initialize(http, auth_headers)
    response = http.get("/v1/mcp", headers={**auth_headers, **in_session(session_id), "Accept": "text/event-stream"})
    assert response.status_code == 405
    assert "POST" in response.headers["allow"]


def test_the_mcp_alias(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    response = post(http, auth_headers, request("ping"), path="/mcp")
    assert response.json() == {"jsonrpc": "2.0", "id": 1, "result": {}}
    assert http.get("/mcp/tools", headers=auth_headers).json()["tools"] == \
        http.get("/v1/mcp/tools", headers=auth_headers).json()["tools"]


def test_api_key_auth(stack: Stack, http: httpx.Client, auth_headers: dict[str, str]) -> None:
    key = http.post("/auth/api-keys", json={"name": "mcp"}, headers=auth_headers).json()["key"]
    for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}):
        session_id, answer = initialize(http, headers)
        assert answer["result"]["protocolVersion"] == "2025-11-25"
        assert post(http, headers, request("tools/list"), **in_session(session_id)).status_code == 200
    # The key's user owns the session: the same user's JWT can use it.
    assert post(http, auth_headers, request("ping"), **in_session(session_id)).status_code == 200


def test_no_auth_is_401(http: httpx.Client) -> None:
    for response in (post(http, {}, request("ping")), http.get("/v1/mcp/tools"), http.delete("/v1/mcp"),
                     post(http, {"Authorization": "Bearer sk_live_" + "0" * 48}, request("ping"))):
        assert_error_envelope(response, 401, type="auth_error")


def test_typed_call_tool_errors(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    missing = http.post("/v1/mcp/tools/no_such_tool:call", json={}, headers=auth_headers)
    assert_error_envelope(missing, 404, type="not_found_error", code="tool_not_found", param="name")
    name, argument = tool_with_required_argument(http, auth_headers)
    invalid = http.post(f"/v1/mcp/tools/{name}:call", json={}, headers=auth_headers)
    assert_error_envelope(invalid, 400, type="invalid_request_error", param=argument)
