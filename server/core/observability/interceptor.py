"""Every RPC, measured and logged once: `jan_rpc_requests_total`, `jan_rpc_duration_seconds`, one access-log line,
and its request id on its trace span.

The status is the HTTP status the client got through Envoy: the servicer's `x-http-status` initial metadata when
it sent one (HttpBody RPCs, 201s), otherwise the status the transcoder derives from the gRPC code. A stream that
fails after its first byte still answered 200 (its error is an in-band SSE event), and so counts as 200.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import Any

import grpc

from server.core.observability.metrics import RPC_DURATION, RPC_REQUESTS
from server.core.observability.tracing import annotate_request

access_log = logging.getLogger("jan.access")

# Envoy's grpc_json_transcoder mapping (and grpc-gateway's): gRPC code -> HTTP status.
HTTP_STATUS_OF_CODE: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
_CODE_OF_VALUE = {code.value[0]: code for code in grpc.StatusCode}


def _status_code(value: object) -> grpc.StatusCode | None:
    """A code set with context.set_code(), which gRPC's context hands back as its integer value."""
    if isinstance(value, grpc.StatusCode):
        return value
    return _CODE_OF_VALUE.get(value) if isinstance(value, int) else None


# Calls Envoy itself makes, on every API-key request and every health check: logged at DEBUG, counted as usual.
_GATEWAY_SERVICES = frozenset({"envoy.service.auth.v3.Authorization", "grpc.health.v1.Health"})


class _Call:
    """One RPC being observed. Its context stands in for gRPC's in the handler, to see the status it sets."""

    def __init__(self, method: str, metadata: Sequence[tuple[str, Any]]) -> None:
        self.service, _, self.method = method.lstrip("/").rpartition("/")
        self.headers = {key: value for key, value in metadata if isinstance(value, str)}
        self.started = time.perf_counter()
        annotate_request(self.headers.get("x-request-id", ""))
        self.http_status: int | None = None
        self.code: grpc.StatusCode | None = None

    def context(self, context: grpc.aio.ServicerContext) -> grpc.aio.ServicerContext:
        return _RecordingContext(context, self)  # type: ignore[return-value]

    def finish(self, context: grpc.aio.ServicerContext, error: BaseException | None) -> None:
        status = self._status(context, error)
        seconds = time.perf_counter() - self.started
        RPC_REQUESTS.labels(self.service, self.method, str(status)).inc()
        RPC_DURATION.labels(self.service, self.method).observe(seconds)
        headers = self.headers
        fields = {
            "request_id": headers.get("x-request-id", ""),
            "user_id": headers.get("x-user-id", ""),
            "rpc": f"{self.service}/{self.method}",
            "http_method": headers.get("x-envoy-original-method", ""),
            "http_path": headers.get("x-envoy-original-path", "").split("?", 1)[0],  # a query may hold a code
            "status": status,
            "latency_ms": round(seconds * 1000, 1),
        }
        access_log.log(
            logging.DEBUG if self.service in _GATEWAY_SERVICES else logging.INFO,
            "%s %s %s %d %.1f ms request_id=%s user_id=%s", fields["http_method"] or "-", fields["http_path"] or "-",
            fields["rpc"], status, fields["latency_ms"], fields["request_id"] or "-", fields["user_id"] or "-",
            extra=fields,
        )

    def _status(self, context: grpc.aio.ServicerContext, error: BaseException | None) -> int:
        if isinstance(error, asyncio.CancelledError | GeneratorExit):
            return 499  # the client (or Envoy, for a client that went away) cancelled the call
        code = self.code or _status_code(context.code())
        if error is not None and code in (None, grpc.StatusCode.OK):
            code = grpc.StatusCode.UNKNOWN  # an exception the handler let out: gRPC answers UNKNOWN
        if code in (None, grpc.StatusCode.OK):
            return self.http_status or 200
        # errors.lua: a failed call keeps its error status unless the servicer named an error status itself.
        if self.http_status is not None and self.http_status >= 400:
            return self.http_status
        return HTTP_STATUS_OF_CODE.get(code, 500)


class _RecordingContext:
    """Forwards everything to gRPC's context; remembers the `x-http-status` sent and the code of an abort."""

    def __init__(self, context: grpc.aio.ServicerContext, call: _Call) -> None:
        self._context = context
        self._call = call

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def send_initial_metadata(self, metadata: Sequence[tuple[str, str]]) -> None:
        for key, value in metadata:
            if key == "x-http-status" and value.isdigit():
                self._call.http_status = int(value)
        await self._context.send_initial_metadata(metadata)

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> None:
        self._call.code = code
        await self._context.abort(code, details, trailing_metadata)


Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]


def _unary(behavior: Behavior, method: str, metadata: Sequence[tuple[str, Any]]) -> Behavior:
    async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
        call = _Call(method, metadata)
        error: BaseException | None = None
        try:
            return await behavior(request, call.context(context))
        except BaseException as raised:
            error = raised
            raise
        finally:
            call.finish(context, error)

    return observed


def _streaming(behavior: Behavior, method: str, metadata: Sequence[tuple[str, Any]]) -> Behavior:
    async def observed(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        call = _Call(method, metadata)
        error: BaseException | None = None
        try:
            responses = behavior(request, call.context(context))
            async with aclosing(responses):
                async for response in responses:
                    yield response
        except BaseException as raised:
            error = raised
            raise
        finally:
            call.finish(context, error)

    return observed


class RpcObserver(grpc.aio.ServerInterceptor):
    """Wraps every method handler of the server (reflection, health and ext_authz included)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler  # an unknown method: gRPC answers UNIMPLEMENTED itself
        method = handler_call_details.method
        metadata = tuple(handler_call_details.invocation_metadata or ())
        serializers = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(_unary(handler.unary_unary, method, metadata), **serializers)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(_unary(handler.stream_unary, method, metadata), **serializers)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _observed_stream(handler.unary_stream, method, metadata), **serializers
            )
        return grpc.stream_stream_rpc_method_handler(
            _observed_stream(handler.stream_stream, method, metadata), **serializers
        )


def _observed_stream(behavior: Behavior, method: str, metadata: Sequence[tuple[str, Any]]) -> Behavior:
    """Generator handlers stay generators; handlers that write with context.write() (grpc.health's Watch) are
    coroutines, which gRPC runs as such."""
    if inspect.isasyncgenfunction(behavior):
        return _streaming(behavior, method, metadata)
    return _unary(behavior, method, metadata)
