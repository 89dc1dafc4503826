"""OpenAI-style API errors: `{"error": {"type", "code", "message", "param", "request_id"}}`.

Domain code raises ApiError; the gRPC layer (server/core/rpc.py) turns it into a gRPC status whose message is the
error JSON, which Envoy's errors.lua unwraps into the HTTP body with the matching status.
"""

from __future__ import annotations

import json
from typing import Any

import grpc

# HTTP status -> (gRPC code that Envoy's transcoder maps back to that status, the seed's error type).
_BY_STATUS: dict[int, tuple[grpc.StatusCode, str]] = {
    400: (grpc.StatusCode.INVALID_ARGUMENT, "invalid_request_error"),
    401: (grpc.StatusCode.UNAUTHENTICATED, "auth_error"),
    403: (grpc.StatusCode.PERMISSION_DENIED, "permission_error"),
    404: (grpc.StatusCode.NOT_FOUND, "not_found_error"),
    409: (grpc.StatusCode.ALREADY_EXISTS, "invalid_request_error"),
    413: (grpc.StatusCode.INVALID_ARGUMENT, "invalid_request_error"),
    429: (grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limit_error"),
    500: (grpc.StatusCode.INTERNAL, "internal_error"),
    501: (grpc.StatusCode.UNIMPLEMENTED, "internal_error"),
    503: (grpc.StatusCode.UNAVAILABLE, "internal_error"),
    504: (grpc.StatusCode.DEADLINE_EXCEEDED, "internal_error"),
}
# Statuses the transcoder derives from their gRPC code unchanged; others are sent as `x-http-status` too.
_TRANSCODED_STATUSES = frozenset({400, 401, 403, 404, 409, 429, 500, 501, 503, 504})


class ApiError(Exception):
    """An error a client should see, with its HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type or _BY_STATUS.get(status, (grpc.StatusCode.UNKNOWN, "internal_error"))[1]

    @property
    def status_survives_transcoding(self) -> bool:
        return self.status in _TRANSCODED_STATUSES

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return _BY_STATUS.get(self.status, (grpc.StatusCode.UNKNOWN, ""))[0]

    def body(self, request_id: str) -> dict[str, Any]:
        return {
            "error": {
                "type": self.type,
                "code": self.code,
                "message": self.message,
                "param": self.param,
                "request_id": request_id,
            }
        }

    def json(self, request_id: str) -> str:
        # ASCII-only so the JSON survives as a gRPC status message and an HTTP header value.
        return json.dumps(self.body(request_id), ensure_ascii=True)


def invalid_request(message: str, *, param: str | None = None, code: str = "invalid_parameter") -> ApiError:
    return ApiError(400, message, code=code, param=param)


def unauthorized(message: str = "Authentication required") -> ApiError:
    return ApiError(401, message, code="unauthorized")


def model_not_found(model: str) -> ApiError:
    return ApiError(404, f"The model '{model}' does not exist", code="model_not_found", param="model")


def server_busy(message: str) -> ApiError:
    return ApiError(429, message, code="server_busy")


def internal_error(message: str = "The server had an error while processing your request") -> ApiError:
    return ApiError(500, message, code="server_error")


def unavailable(message: str) -> ApiError:
    return ApiError(503, message, code="service_unavailable")


def shutting_down() -> ApiError:
    return ApiError(503, "The server is shutting down; retry shortly", code="server_shutting_down")
