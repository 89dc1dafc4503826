"""The MCP server: JSON-RPC 2.0 messages, the lifecycle, version negotiation, sessions and the tool methods.

Transport-neutral: `McpEndpoint` takes what the streamable HTTP transport delivers (the POST body and the
`Mcp-Session-Id` / `MCP-Protocol-Version` headers) and answers an `McpReply` (HTTP status, JSON-RPC messages,
the session header to send). The servicer frames it as JSON or SSE.

Decisions the spec leaves to the server:
- Sessions are optional: a request without `Mcp-Session-Id` is served statelessly, at the version its
  `MCP-Protocol-Version` header names (2025-03-26 without one, as the spec says to assume).
- A request with no `id` whose method is not a notification (`notifications/...`) is answered with `"id": null`
  instead of being dropped: the user's API reference sends `tools/call` that way and expects the result.
- Batches are accepted only under 2025-03-26, the one supported version that has them.
- Arguments that do not fit a tool's input schema are a -32602 error under 2025-03-26 and 2025-06-18, and a
  tool result with `isError: true` under 2025-11-25, which moved them there so models can read and correct them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from server.mcp.store import McpSession, McpSessionStore
from server.mcp.tools.base import InvalidToolArguments, ToolContext
from server.mcp.tools.registry import ToolRegistry, UnknownTool

log = logging.getLogger(__name__)

SUPPORTED_VERSIONS = ("2025-03-26", "2025-06-18", "2025-11-25")
LATEST_VERSION = SUPPORTED_VERSIONS[-1]
# What a request that names no version speaks (the transport spec: assume 2025-03-26).
DEFAULT_VERSION = "2025-03-26"
# From this version on, invalid tool arguments are tool execution errors rather than protocol errors.
_ARGUMENT_ERRORS_AS_RESULTS = "2025-11-25"
_BATCH_VERSIONS = ("2025-03-26",)

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# Implementation-defined server error: the session named by Mcp-Session-Id does not exist (HTTP 404).
SESSION_NOT_FOUND = -32001

RequestId = str | int | None


def server_version() -> str:
    try:
        return version("jan-server")
    except PackageNotFoundError:
        return "0.0.0"


class RpcError(Exception):
    """A JSON-RPC error object for one message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class McpReply:
    """What to answer: an HTTP status, the JSON-RPC answer (one message, a batch, or None for no body)."""

    status: int
    body: dict[str, Any] | list[dict[str, Any]] | None = None
    session_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class McpRequest:
    """One POST to the MCP endpoint, as the transport saw it."""

    user_id: str
    request_id: str
    body: bytes
    session_id: str | None = None
    protocol_version: str | None = None


def error_message(request_id: RequestId, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def error_reply(status: int, code: int, message: str, request_id: RequestId = None) -> McpReply:
    return McpReply(status=status, body=error_message(request_id, code, message))


def session_not_found(request_id: RequestId = None) -> McpReply:
    """The spec's signal to start over: the session ended (DELETE, idle) or never existed for this user."""
    return error_reply(404, SESSION_NOT_FOUND, "Session not found: initialize a new one", request_id)


def _single_id(message: Any) -> RequestId:
    """The id to echo in a transport-level error about this body, when it is one request with a usable id."""
    if isinstance(message, dict) and isinstance(message.get("id"), str | int) and not isinstance(message["id"], bool):
        return message["id"]
    return None


def _is_initialize(message: Any) -> bool:
    return isinstance(message, dict) and message.get("method") == "initialize"


@dataclass
class _Exchange:
    """State shared by the messages of one POST."""

    request: McpRequest
    version: str
    batch: bool
    session_id: str | None = None  # a session created by `initialize` in this POST


class McpEndpoint:
    def __init__(self, registry: ToolRegistry, sessions: McpSessionStore) -> None:
        self._registry = registry
        self._sessions = sessions

    async def post(self, request: McpRequest) -> McpReply:
        try:
            parsed = json.loads(request.body)
        except (ValueError, UnicodeDecodeError) as error:
            return error_reply(400, PARSE_ERROR, f"Parse error: {error}")

        request_id = _single_id(parsed)
        session: McpSession | None = None
        if not _is_initialize(parsed):
            header = request.protocol_version
            if header is not None and header not in SUPPORTED_VERSIONS:
                return error_reply(
                    400,
                    INVALID_REQUEST,
                    f"Unsupported MCP-Protocol-Version: {header!r}; supported: {', '.join(SUPPORTED_VERSIONS)}",
                    request_id,
                )
            if request.session_id:
                session = await self._sessions.get(request.session_id, request.user_id)
                if session is None:
                    return session_not_found(request_id)
        version = request.protocol_version or (session.protocol_version if session else DEFAULT_VERSION)

        if isinstance(parsed, list):
            if version not in _BATCH_VERSIONS:
                return error_reply(400, INVALID_REQUEST, f"JSON-RPC batches are not supported in protocol {version}")
            if not parsed:
                return error_reply(400, INVALID_REQUEST, "Invalid request: empty batch")
            exchange = _Exchange(request, version, batch=True)
            answers = [answer for message in parsed if (answer := await self._handle(message, exchange)) is not None]
            return McpReply(status=200 if answers else 202, body=answers or None, session_id=exchange.session_id)

        exchange = _Exchange(request, version, batch=False)
        answer = await self._handle(parsed, exchange)
        if answer is None:
            return McpReply(status=202)
        # A message that is not a valid request at all is a bad HTTP request too; method errors are not.
        malformed = "error" in answer and answer["error"]["code"] == INVALID_REQUEST
        return McpReply(status=400 if malformed else 200, body=answer, session_id=exchange.session_id)

    async def end_session(self, user_id: str, session_id: str | None) -> McpReply:
        if not session_id:
            return error_reply(400, INVALID_REQUEST, "Mcp-Session-Id header required to end a session")
        if not await self._sessions.end(session_id, user_id):
            return session_not_found()
        return McpReply(status=204)

    async def _handle(self, message: Any, exchange: _Exchange) -> dict[str, Any] | None:
        """The answer to one message, or None when none is due (notifications, client responses)."""
        if not isinstance(message, dict):
            return error_message(None, INVALID_REQUEST, "Invalid request: a JSON-RPC message must be an object")
        method = message.get("method")
        has_id = "id" in message
        request_id = message.get("id")
        if method is None and ("result" in message or "error" in message):
            return None  # a response to a server request; this server sends none, so there is nothing to match
        if message.get("jsonrpc") != "2.0":
            return error_message(_single_id(message), INVALID_REQUEST, 'Invalid request: "jsonrpc" must be "2.0"')
        if not isinstance(method, str):
            return error_message(_single_id(message), INVALID_REQUEST, 'Invalid request: "method" must be a string')
        if has_id and (not isinstance(request_id, str | int) or isinstance(request_id, bool)):
            return error_message(None, INVALID_REQUEST, 'Invalid request: "id" must be a string or an integer')
        if not has_id and method.startswith("notifications/"):
            return None  # initialized, cancelled, ...: nothing to do for a server without server-side state
        params = message.get("params", {})
        if params is None:
            params = {}
        try:
            if not isinstance(params, dict):
                raise RpcError(INVALID_PARAMS, 'Invalid params: "params" must be an object')
            result = await self._dispatch(method, params, exchange)
        except RpcError as error:
            return error_message(request_id, error.code, error.message)
        except Exception:
            log.exception("MCP method %s failed (request %s)", method, exchange.request.request_id)
            return error_message(request_id, INTERNAL_ERROR, f"Internal error (request {exchange.request.request_id})")
        return {"jsonrpc": "2.0", "id": request_id, "result": result}

    async def _dispatch(self, method: str, params: dict[str, Any], exchange: _Exchange) -> dict[str, Any]:
        if method == "initialize":
            return await self._initialize(params, exchange)
        if method == "ping":
            return {}
        if method == "tools/list":
            return {"tools": [self._registry.describe(tool) for tool in self._registry.tools()]}
        if method == "tools/call":
            return await self._call_tool(params, exchange)
        raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method}")

    async def _initialize(self, params: dict[str, Any], exchange: _Exchange) -> dict[str, Any]:
        if exchange.batch:
            raise RpcError(INVALID_REQUEST, "Invalid request: initialize must not be part of a batch")
        requested = params.get("protocolVersion")
        if not isinstance(requested, str):
            raise RpcError(INVALID_PARAMS, 'Invalid params: "protocolVersion" must be a string')
        # Echo a version we speak; otherwise offer our newest and let the client decide whether to go on.
        negotiated = requested if requested in SUPPORTED_VERSIONS else LATEST_VERSION
        client_info = params.get("clientInfo")
        client_name = client_info.get("name") if isinstance(client_info, dict) else None
        session = await self._sessions.create(
            exchange.request.user_id, negotiated, client_name if isinstance(client_name, str) else None
        )
        exchange.session_id = session.id
        return {
            "protocolVersion": negotiated,
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": "jan-server", "version": server_version()},
            "instructions": "Tools of this Jan Server: web search and scraping, semantic search over documents "
            "you index, and sandboxed Python. Call tools/list for what is available now.",
        }

    async def _call_tool(self, params: dict[str, Any], exchange: _Exchange) -> dict[str, Any]:
        name = params.get("name")
        if not isinstance(name, str):
            raise RpcError(INVALID_PARAMS, 'Invalid params: "name" must be the tool\'s name')
        arguments = params.get("arguments")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise RpcError(INVALID_PARAMS, 'Invalid params: "arguments" must be an object')
        context = ToolContext(user_id=exchange.request.user_id, request_id=exchange.request.request_id)
        try:
            result = await self._registry.call(name, arguments, context)
        except UnknownTool as error:
            raise RpcError(INVALID_PARAMS, str(error)) from error
        except InvalidToolArguments as error:
            if SUPPORTED_VERSIONS.index(exchange.version) >= SUPPORTED_VERSIONS.index(_ARGUMENT_ERRORS_AS_RESULTS):
                return {"content": [{"type": "text", "text": str(error)}], "isError": True}
            raise RpcError(INVALID_PARAMS, str(error)) from error
        return result.to_mcp()
