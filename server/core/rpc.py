"""gRPC plumbing shared by the servicers: request ids, the caller's identity, and error translation.

Two kinds of RPC exist. Typed unary RPCs report errors as a gRPC status whose message is the OpenAI error JSON
(Envoy's errors.lua unwraps it). HttpBody RPCs write the HTTP response themselves, so an error before the first
byte is an `x-http-status` header plus a JSON body, and an error after it is an in-band SSE `data: {"error":…}` event.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.api import httpbody_pb2
from google.protobuf import json_format, message, struct_pb2

from server.core.errors import ApiError, internal_error, unauthorized
from server.core.ids import new_request_id

log = logging.getLogger(__name__)

BodyReply = TypeVar("BodyReply", bound=message.Message)
Req = TypeVar("Req")
Resp = TypeVar("Resp")


def metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


def request_id(context: grpc.aio.ServicerContext) -> str:
    """Envoy's `x-request-id` (it also puts it on the response), or a fresh one for direct gRPC callers."""
    return metadata(context).get("x-request-id") or new_request_id()


# The caller's roles, comma-separated: from the access token's `roles` claim (jwt_authn) or the API key owner's
# (ext_authz). Envoy strips client-sent copies, like x-user-id.
ROLES_HEADER = "x-user-roles"


@dataclass(frozen=True)
class Caller:
    """Who is calling. Only the gateway sets these headers: Envoy strips them from client requests."""

    user_id: str
    auth_method: str
    roles: frozenset[str] = frozenset()

    def require_role(self, role: str) -> None:
        """403 unless the caller has the role. Envoy already refuses such requests on the routes it guards; this
        keeps a service safe if a route is added without the gateway rule, or called over gRPC past Envoy."""
        if role not in self.roles:
            raise ApiError(403, f"This endpoint requires the '{role}' role", code="permission_denied")


def caller(context: grpc.aio.ServicerContext) -> Caller:
    md = metadata(context)
    user_id = md.get("x-user-id")
    if not user_id:
        raise unauthorized()
    method = md.get("x-auth-method") or ("jwt" if "x-jwt-payload" in md else "internal")
    roles = frozenset(role.strip() for role in md.get(ROLES_HEADER, "").split(",") if role.strip())
    return Caller(user_id=user_id, auth_method=method, roles=roles)


async def send_http_status(
    context: grpc.aio.ServicerContext, status: int, headers: Sequence[tuple[str, str]] = ()
) -> None:
    """Sets the HTTP status of a transcoded response (errors.lua moves `x-http-status` into `:status`), and any other
    response headers, e.g. `location` (initial metadata, sent once per call, becomes HTTP response headers)."""
    await context.send_initial_metadata((("x-http-status", str(status)), *headers))


async def abort_with(context: grpc.aio.ServicerContext, error: ApiError) -> None:
    if not error.status_survives_transcoding:
        # No gRPC code becomes this status (e.g. 502): errors.lua takes an error status from the header instead.
        await send_http_status(context, error.status)
    await context.abort(error.grpc_code, error.json(request_id(context)))


def unary(
    method: Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]],
) -> Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]:
    """Wraps a typed unary handler so ApiError (and any bug) becomes an OpenAI-shaped gRPC status."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        try:
            return await method(self, request, context)
        except ApiError as error:
            await abort_with(context, error)
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("unhandled error in %s", method.__qualname__)
            await abort_with(context, internal_error())
        raise AssertionError("unreachable: abort raises")

    return wrapper


StreamHandler = Callable[[Any, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]]


def http_body_stream(
    wrap: Callable[[str, bytes], Resp],
) -> Callable[[StreamHandler[Req, Resp]], StreamHandler[Req, Resp]]:
    """Wraps a server-streaming HttpBody handler; `wrap(content_type, data)` builds one response message."""

    def decorate(method: StreamHandler[Req, Resp]) -> StreamHandler[Req, Resp]:
        @functools.wraps(method)
        async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> AsyncIterator[Resp]:
            started = False
            try:
                async for message in method(self, request, context):
                    started = True
                    yield message
            except ApiError as error:
                async for message in _error_messages(context, error, started, wrap):
                    yield message
            except grpc.aio.AbortError:
                raise
            except Exception:
                log.exception("unhandled error in %s", method.__qualname__)
                async for message in _error_messages(context, internal_error(), started, wrap):
                    yield message

        return wrapper

    return decorate


UnaryHandler = Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]


def http_body_unary(
    wrap: Callable[[str, bytes], Resp],
) -> Callable[[UnaryHandler[Req, Resp]], UnaryHandler[Req, Resp]]:
    """Wraps a unary HttpBody handler like `http_body_stream` does a streaming one: an ApiError (or a bug) becomes
    the `x-http-status` header and an OpenAI error body built with `wrap(content_type, data)`."""

    def decorate(method: UnaryHandler[Req, Resp]) -> UnaryHandler[Req, Resp]:
        @functools.wraps(method)
        async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
            try:
                return await method(self, request, context)
            except ApiError as error:
                return await _error_message(context, error, wrap)
            except grpc.aio.AbortError:
                raise
            except Exception:
                log.exception("unhandled error in %s", method.__qualname__)
                return await _error_message(context, internal_error(), wrap)

        return wrapper

    return decorate


async def _error_messages(
    context: grpc.aio.ServicerContext, error: ApiError, started: bool, wrap: Callable[[str, bytes], Resp]
) -> AsyncIterator[Resp]:
    if started:
        yield wrap("text/event-stream", b"data: " + error.json(request_id(context)).encode() + b"\n\n")
        return
    yield await _error_message(context, error, wrap)


async def _error_message(
    context: grpc.aio.ServicerContext, error: ApiError, wrap: Callable[[str, bytes], Resp]
) -> Resp:
    """The whole response of a call that fails before its first byte: status header and JSON error body."""
    await send_http_status(context, error.status)
    return wrap("application/json", error.json(request_id(context)).encode())


def struct_json(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A protobuf Struct as JSON. Struct numbers are all doubles: integral ones become ints again."""
    return dict(_integral(json_format.MessageToDict(struct)))


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _integral(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral(item) for item in value]
    return value


def body_reply(reply_type: type[BodyReply]) -> Callable[[str, bytes], BodyReply]:
    """Builds `reply_type`, a message whose `body` is an HttpBody, around one piece of HTTP body (http_body_unary and
    http_body_stream also use it for error bodies)."""

    def wrap(content_type: str, data: bytes) -> BodyReply:
        return reply_type(body=httpbody_pb2.HttpBody(content_type=content_type, data=data))

    return wrap


def json_reply(reply_type: type[BodyReply], value: Any) -> BodyReply:
    """`reply_type` holding `value` as a compact JSON body."""
    data = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    return body_reply(reply_type)("application/json", data)
