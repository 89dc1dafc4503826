"""The official `mcp` SDK's streamable HTTP client through Envoy, and the typed jan.mcp.v1 gRPC service."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import httpx
import httpx2
import pytest
from google.protobuf import json_format, struct_pb2
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from server.gen.jan.mcp.v1 import mcp_pb2, mcp_pb2_grpc
from tests.support.stack import Stack

# Arguments each known tool is called with. Tools whose backend is reachable here must succeed with them.
SAMPLE_ARGUMENTS: dict[str, dict[str, Any]] = {
    "google_search": {"q": "jan server", "num": 3},
    "scrape": {"url": "https://example.com/"},  # no internet here: a readable tool error is the expected answer
    "file_search_index": {"document_id": "sdk-doc", "text": "The MCP SDK indexed this short note about otters."},
    "file_search_query": {"query": "a note about otters", "top_k": 3},
    "python_exec": {"code": "print(6 * 7)"},
}
MUST_SUCCEED_WHEN_AVAILABLE = {"file_search_index", "file_search_query", "python_exec"}


@asynccontextmanager
async def sdk_session(stack: Stack, headers: dict[str, str], path: str = "/v1/mcp") -> AsyncIterator[ClientSession]:
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        streamable_http_client(f"{stack.base_url}{path}", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        yield session


async def rest(stack: Stack, method: str, path: str, headers: dict[str, str], **kwargs: Any) -> Any:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as http:
        response = await http.request(method, path, headers=headers, **kwargs)
    assert response.is_success, response.text
    return response.json()


async def test_the_sdk_initializes_lists_and_calls_every_tool(stack: Stack, auth_headers: dict[str, str]) -> None:
    tools = (await rest(stack, "GET", "/v1/mcp/tools", auth_headers))["tools"]
    availability = {tool["name"]: tool for tool in tools}
    async with sdk_session(stack, auth_headers) as session:
        initialized = await session.initialize()
        assert initialized.protocol_version == "2025-11-25"
        assert initialized.server_info.name == "jan-server"
        await session.send_ping()

        listed = await session.list_tools()
        assert [tool.name for tool in listed.tools] == list(availability)
        assert set(SAMPLE_ARGUMENTS) <= set(availability), "a tool of the issue is not registered"
        for tool in listed.tools:
            assert tool.input_schema["type"] == "object" and tool.output_schema is not None
            info = availability[tool.name]
            # The SDK validates structuredContent against the tool's outputSchema itself.
            result = await session.call_tool(tool.name, SAMPLE_ARGUMENTS[tool.name])
            text = result.content[0].text  # type: ignore[union-attr]
            if not info["available"]:
                assert result.is_error and info["unavailable_reason"] in text, (tool.name, text)
            elif tool.name in MUST_SUCCEED_WHEN_AVAILABLE:
                assert not result.is_error, (tool.name, text)
            if result.is_error:
                assert text and result.structured_content is None
            else:
                assert result.structured_content == json.loads(text)


async def test_sdk_sees_tool_errors_and_protocol_errors(stack: Stack, auth_headers: dict[str, str]) -> None:
    async with sdk_session(stack, auth_headers, "/mcp") as session:
        await session.initialize()
        with pytest.raises(MCPError) as unknown:
            await session.call_tool("no_such_tool", {})
        assert unknown.value.error.code == -32602
        # 2025-11-25: arguments that do not fit the schema come back as a tool error the model can read.
        refused = await session.call_tool("file_search_query", {"top_k": 3})
        assert refused.is_error and "'query'" in refused.content[0].text  # type: ignore[union-attr]


async def test_the_sdk_with_an_api_key(stack: Stack, auth_headers: dict[str, str]) -> None:
    key = (await rest(stack, "POST", "/auth/api-keys", auth_headers, json={"name": "mcp sdk"}))["key"]
    async with sdk_session(stack, {"X-API-Key": key}) as session:
        await session.initialize()
        assert (await session.list_tools()).tools


async def test_the_high_level_client_falls_back_from_its_discovery_probe(
    stack: Stack, auth_headers: dict[str, str]
) -> None:
    """`mcp.Client` first probes the 2026 `server/discover`; this server answers 400, so it initializes."""
    async with (
        httpx2.AsyncClient(headers=auth_headers, timeout=60) as http,
        Client(streamable_http_client(f"{stack.base_url}/v1/mcp", http_client=http)) as client,
    ):
        tools = await client.list_tools()
        assert "file_search_query" in [tool.name for tool in tools.tools]
        result = await client.call_tool("file_search_query", {"query": "anything"})
        assert not result.is_error


def test_grpc_list_and_call_tools(stack: Stack, guest: dict[str, str]) -> None:
    identity = (("x-user-id", guest["user_id"]),)
    with grpc.insecure_channel(stack.grpc_target) as channel:
        mcp = mcp_pb2_grpc.McpServiceStub(channel)
        tools = mcp.ListTools(mcp_pb2.ListToolsRequest(), metadata=identity, timeout=10).tools
        assert {"google_search", "file_search_index", "file_search_query"} <= {tool.name for tool in tools}
        for tool in tools:
            assert json_format.MessageToDict(tool.input_schema)["type"] == "object"
            assert tool.available == (not tool.HasField("unavailable_reason"))

        arguments = json_format.ParseDict({"document_id": "grpc-doc", "text": "Typed gRPC callers index too."},
                                          struct_pb2.Struct())
        indexed = mcp.CallTool(mcp_pb2.CallToolRequest(name="file_search_index", arguments=arguments),
                               metadata=identity, timeout=60)
        assert not indexed.is_error, indexed.content[0].text
        payload = json_format.MessageToDict(indexed.structured_content)
        assert payload["document_id"] == "grpc-doc" and payload["status"] == "indexed"
        assert json.loads(indexed.content[0].text)["document_id"] == "grpc-doc"

        search = mcp.CallTool(mcp_pb2.CallToolRequest(name="google_search", arguments=json_format.ParseDict(
            {"q": "AI news"}, struct_pb2.Struct())), metadata=identity, timeout=30)
        if search.is_error:
            assert not search.HasField("structured_content") and search.content[0].text

        with pytest.raises(grpc.RpcError) as unknown:
            mcp.CallTool(mcp_pb2.CallToolRequest(name="no_such_tool"), metadata=identity, timeout=10)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as invalid:
            mcp.CallTool(mcp_pb2.CallToolRequest(name="file_search_query"), metadata=identity, timeout=10)
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as anonymous:
            mcp.ListTools(mcp_pb2.ListToolsRequest(), timeout=10)
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_typed_rest_call_tool(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    """`POST /v1/mcp/tools/{name}:call` with the arguments as the body, for clients that do not speak MCP."""
    response = http.post("/v1/mcp/tools/file_search_query:call", json={"query": "otters", "top_k": 2},
                         headers=auth_headers)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["is_error"] is False and answer["content"][0]["type"] == "text"
    assert answer["structured_content"]["top_k"] == 2
    assert json.loads(answer["content"][0]["text"]) == answer["structured_content"]
