"""gRPC transport for jan.mcp.v1.McpService: the typed tool RPCs, and the MCP endpoint's HTTP framing.

Envoy forwards the request headers as metadata (`accept`, `mcp-session-id`, `mcp-protocol-version`); response
headers go out as initial metadata (`mcp-session-id`, and `x-http-status`, which errors.lua turns into the status).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.core.config import Settings
from server.core.errors import ApiError, invalid_request
from server.core.rpc import (
    body_reply,
    caller,
    http_body_stream,
    http_body_unary,
    metadata,
    request_id,
    struct_json,
    unary,
)
from server.gen.jan.mcp.v1 import mcp_pb2, mcp_pb2_grpc
from server.llm.embeddings import Embedder
from server.mcp.protocol import INVALID_REQUEST, McpEndpoint, McpReply, McpRequest, error_reply
from server.mcp.store import McpSessionStore
from server.mcp.tools.base import InvalidToolArguments, ToolContext
from server.mcp.tools.registry import InvalidArguments, ToolRegistry, UnknownTool, build_tools

SSE = "text/event-stream"
JSON = "application/json"


def _quality(accept: str, media_type: str) -> float:
    """How much the Accept header wants `media_type` (0 if not at all), wildcards included."""
    best = 0.0
    kind = media_type.split("/")[0]
    for part in accept.split(","):
        pieces = [piece.strip() for piece in part.split(";")]
        name = pieces[0].lower()
        if name not in (media_type, f"{kind}/*", "*/*"):
            continue
        quality = 1.0
        for parameter in pieces[1:]:
            key, _, value = parameter.partition("=")
            if key.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        best = max(best, quality)
    return best


def wants_sse(accept: str) -> bool:
    """SSE only when the client prefers it to JSON; the SDK's `application/json, text/event-stream` gets JSON."""
    return _quality(accept, SSE) > _quality(accept, JSON)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    return json_format.ParseDict(value, struct_pb2.Struct())


_send_message_body = body_reply(mcp_pb2.SendMessageResponse)
_open_stream_body = body_reply(mcp_pb2.OpenStreamResponse)
_end_session_body = body_reply(mcp_pb2.EndSessionResponse)


async def _send_headers(context: grpc.aio.ServicerContext, reply: McpReply, *, sse: bool) -> None:
    headers = [(name.lower(), value) for name, value in reply.headers.items()]
    if reply.status != 200:
        headers.append(("x-http-status", str(reply.status)))
    if reply.session_id:
        headers.append(("mcp-session-id", reply.session_id))
    if sse:
        headers.append(("cache-control", "no-cache"))
    await context.send_initial_metadata(tuple(headers))


class McpServicer(mcp_pb2_grpc.McpServiceServicer):
    def __init__(self, registry: ToolRegistry, endpoint: McpEndpoint) -> None:
        self._registry = registry
        self._endpoint = endpoint

    @classmethod
    def from_settings(
        cls, settings: Settings, sessions: async_sessionmaker[AsyncSession], embedder: Embedder | None
    ) -> McpServicer:
        registry = ToolRegistry(build_tools(settings, sessions, embedder))
        return cls(registry, McpEndpoint(registry, McpSessionStore(sessions)))

    @unary
    async def ListTools(
        self, request: mcp_pb2.ListToolsRequest, context: grpc.aio.ServicerContext
    ) -> mcp_pb2.ListToolsResponse:
        caller(context)
        tools = []
        for tool in self._registry.tools():
            reason = tool.unavailable_reason()
            tools.append(
                mcp_pb2.Tool(
                    name=tool.name,
                    description=tool.description,
                    input_schema=_struct(tool.input_schema),
                    output_schema=_struct(tool.output_schema),
                    available=reason is None,
                    unavailable_reason=reason,
                )
            )
        return mcp_pb2.ListToolsResponse(tools=tools)

    @unary
    async def CallTool(
        self, request: mcp_pb2.CallToolRequest, context: grpc.aio.ServicerContext
    ) -> mcp_pb2.CallToolResponse:
        tool_context = ToolContext(user_id=caller(context).user_id, request_id=request_id(context))
        arguments = struct_json(request.arguments)
        try:
            result = await self._registry.call(request.name, arguments, tool_context)
        except UnknownTool as error:
            raise ApiError(404, str(error), code="tool_not_found", param="name") from error
        except InvalidToolArguments as error:
            argument = error.argument if isinstance(error, InvalidArguments) else None
            raise invalid_request(str(error), param=argument or "arguments") from error
        return mcp_pb2.CallToolResponse(
            content=[mcp_pb2.Content(type="text", text=result.text)],
            structured_content=_struct(result.payload) if result.payload is not None else None,
            is_error=result.is_error,
        )

    @http_body_stream(_send_message_body)
    async def SendMessage(
        self, request: mcp_pb2.SendMessageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[mcp_pb2.SendMessageResponse]:
        headers = metadata(context)
        reply = await self._endpoint.post(
            McpRequest(
                user_id=caller(context).user_id,
                request_id=request_id(context),
                body=request.body.data,
                session_id=headers.get("mcp-session-id") or None,
                protocol_version=headers.get("mcp-protocol-version") or None,
            )
        )
        # Errors are JSON whatever the client accepts: the SDK reads a non-2xx JSON-RPC error body only as JSON.
        sse = reply.status == 200 and wants_sse(headers.get("accept", ""))
        await _send_headers(context, reply, sse=sse)
        if reply.body is None:
            yield _send_message_body(JSON, b"")
        elif sse:
            messages = reply.body if isinstance(reply.body, list) else [reply.body]
            for message in messages:
                yield _send_message_body(SSE, b"event: message\ndata: " + _dumps(message) + b"\n\n")
        else:
            yield _send_message_body(JSON, _dumps(reply.body))

    @http_body_unary(_open_stream_body)
    async def OpenStream(
        self, request: mcp_pb2.OpenStreamRequest, context: grpc.aio.ServicerContext
    ) -> mcp_pb2.OpenStreamResponse:
        caller(context)
        reply = error_reply(405, INVALID_REQUEST, "Method not allowed: this server sends no server-initiated messages")
        reply.headers["allow"] = "POST, DELETE"
        await _send_headers(context, reply, sse=False)
        return _open_stream_body(JSON, _dumps(reply.body))

    @http_body_unary(_end_session_body)
    async def EndSession(
        self, request: mcp_pb2.EndSessionRequest, context: grpc.aio.ServicerContext
    ) -> mcp_pb2.EndSessionResponse:
        user_id = caller(context).user_id
        reply = await self._endpoint.end_session(user_id, metadata(context).get("mcp-session-id") or None)
        await _send_headers(context, reply, sse=False)
        return _end_session_body(JSON, _dumps(reply.body) if reply.body is not None else b"")
