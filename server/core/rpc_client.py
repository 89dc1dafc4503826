"""What a service's gRPC clients of other services share: the caller's identity as metadata, and reading errors back.

Services call each other through their public gRPC contracts (the responses service calls LLM and MCP, the LLM
service the media service when it runs elsewhere), so each can run as its own process. Typed errors arrive as a
gRPC status whose message is the OpenAI error JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import grpc

from server.core.errors import ApiError

_STATUS_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


@dataclass(frozen=True)
class CallerMetadata:
    """The identity Envoy gave the original request, passed on to the services the orchestration calls."""

    user_id: str
    auth_method: str
    request_id: str

    def grpc(self) -> tuple[tuple[str, str], ...]:
        return (("x-user-id", self.user_id), ("x-auth-method", self.auth_method), ("x-request-id", self.request_id))


def error_from_json(status: int, data: bytes | str) -> ApiError:
    """An ApiError from an OpenAI error body (`{"error": {message, code, param, type}}`), whatever its shape."""
    try:
        error = json.loads(data)["error"]
        return ApiError(status, str(error.get("message") or "error"), code=error.get("code"),
                        param=error.get("param"), type=error.get("type"))
    except (ValueError, KeyError, TypeError, AttributeError):
        text = data.decode(errors="replace") if isinstance(data, bytes) else data
        return ApiError(status, text[:500] or "error", code="upstream_error")


async def sent_http_status(call: grpc.aio.Call) -> int | None:
    """The `x-http-status` an HttpBody RPC sent as initial metadata: how it answers errors (with an OpenAI error
    body) and non-200 successes."""
    status = dict(await call.initial_metadata() or ()).get("x-http-status")
    return int(status) if isinstance(status, str) and status.isdigit() else None


def error_from_rpc(error: grpc.aio.AioRpcError) -> ApiError:
    status = _STATUS_BY_CODE.get(error.code(), 500)
    return error_from_json(status, error.details() or "")
