"""Client of jan.mcp.v1.McpService: the tool list (cached briefly) and tool calls with a per-call deadline.

A tool that fails, times out, or is refused (unknown name, arguments that do not fit its schema) is a result with
`is_error` and the reason as text: the model sees it as the tool's output, and the response goes on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from server.core.rpc import struct_json
from server.core.rpc_client import CallerMetadata, error_from_rpc
from server.gen.jan.mcp.v1 import mcp_pb2, mcp_pb2_grpc

TOOL_LIST_TTL_SECONDS = 30.0


@dataclass(frozen=True)
class McpTool:
    name: str
    description: str
    input_schema: dict[str, Any]
    available: bool


@dataclass(frozen=True)
class ToolResult:
    text: str
    is_error: bool


class McpClient:
    def __init__(self, channel: grpc.aio.Channel, timeout_seconds: float) -> None:
        self._stub = mcp_pb2_grpc.McpServiceStub(channel)
        self._timeout = timeout_seconds
        self._tools: list[McpTool] = []
        self._listed_at = float("-inf")

    async def list_tools(self, caller: CallerMetadata) -> list[McpTool]:
        """Every tool of the server (the same for every user), listed again after TOOL_LIST_TTL_SECONDS."""
        if time.monotonic() - self._listed_at > TOOL_LIST_TTL_SECONDS:
            try:
                reply = await self._stub.ListTools(mcp_pb2.ListToolsRequest(), metadata=caller.grpc(), timeout=30)
            except grpc.aio.AioRpcError as error:
                raise error_from_rpc(error) from None
            self._tools = [
                McpTool(tool.name, tool.description, struct_json(tool.input_schema),
                        tool.available)
                for tool in reply.tools
            ]
            self._listed_at = time.monotonic()
        return self._tools

    async def call_tool(self, name: str, arguments: dict[str, Any], caller: CallerMetadata) -> ToolResult:
        request = mcp_pb2.CallToolRequest(name=name, arguments=json_format.ParseDict(arguments, struct_pb2.Struct()))
        try:
            reply = await self._stub.CallTool(request, metadata=caller.grpc(), timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return ToolResult(f"Tool '{name}' timed out after {self._timeout:g} s", True)
            return ToolResult(error_from_rpc(error).message, True)
        return ToolResult("\n".join(part.text for part in reply.content), reply.is_error)
