"""The RPC interceptor against a real grpc.aio server, the /metrics endpoint, log redaction and the JSON log format."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import AsyncIterator
from itertools import count
from typing import Any

import grpc
import httpx
import pytest
from pydantic import SecretStr

from server.core.config import ModelSettings, Settings
from server.core.errors import ApiError
from server.core.observability.endpoint import MetricsEndpoint
from server.core.observability.interceptor import RpcObserver
from server.core.observability.logging import (
    REDACTED,
    JsonFormatter,
    RedactSecrets,
    secret_patterns,
    secret_values,
)
from server.core.observability.metrics import REGISTRY
from server.core.rpc import abort_with, http_body_stream, send_http_status, unary
from server.mcp.tools.base import Tool, ToolContext
from server.mcp.tools.registry import ToolRegistry, UnknownTool
from tests.support.ports import free_port
from tests.support.stack import ROOT

_services = count()


def _identity(data: bytes) -> bytes:
    return data


class _Servicer:
    """Handlers that end the ways real servicers do."""

    @unary
    async def Ok(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b"ok"

    @unary
    async def Created(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await send_http_status(context, 201)
        return b"created"

    @unary
    async def NotFound(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise ApiError(404, "no such thing", code="not_found")

    async def BadGateway(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await abort_with(context, ApiError(502, "upstream broke", code="upstream_error"))
        return b""

    async def Bug(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise RuntimeError("a bug")

    @http_body_stream(lambda content_type, data: data)
    async def StreamRefused(self, request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        raise ApiError(429, "busy", code="server_busy")
        yield b""

    @http_body_stream(lambda content_type, data: data)
    async def StreamFailsLate(self, request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        yield b"data: first\n\n"
        raise ApiError(504, "too slow", code="upstream_timeout")

    async def StreamForever(self, request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        while True:
            yield b"tick"
            await asyncio.sleep(0.01)


_UNARY = ("Ok", "Created", "NotFound", "BadGateway", "Bug")
_STREAMS = ("StreamRefused", "StreamFailsLate", "StreamForever")


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, grpc.aio.Channel]]:
    """A server with the interceptor, and a channel to it; the service name is new for each test."""
    service = f"test.Observed{next(_services)}"
    servicer = _Servicer()
    handlers: dict[str, grpc.RpcMethodHandler] = {
        name: grpc.unary_unary_rpc_method_handler(getattr(servicer, name), _identity, _identity) for name in _UNARY
    }
    handlers |= {
        name: grpc.unary_stream_rpc_method_handler(getattr(servicer, name), _identity, _identity) for name in _STREAMS
    }
    server = grpc.aio.server(interceptors=[RpcObserver()])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield service, channel
    await channel.close()
    await server.stop(None)


def _requests(service: str, method: str, status: int) -> float:
    labels = {"service": service, "method": method, "status": str(status)}
    return REGISTRY.get_sample_value("jan_rpc_requests_total", labels) or 0.0


async def _unary(channel: grpc.aio.Channel, service: str, method: str, metadata: Any = ()) -> None:
    call = channel.unary_unary(f"/{service}/{method}", _identity, _identity)
    try:
        await call(b"", metadata=metadata)
    except grpc.aio.AioRpcError:
        pass


async def _stream(channel: grpc.aio.Channel, service: str, method: str) -> list[bytes]:
    call = channel.unary_stream(f"/{service}/{method}", _identity, _identity)
    return [message async for message in call(b"")]


@pytest.mark.parametrize(("method", "status"), [
    ("Ok", 200), ("Created", 201), ("NotFound", 404), ("BadGateway", 502), ("Bug", 500),
])
async def test_a_unary_rpc_counts_the_status_the_http_client_gets(
    served: tuple[str, grpc.aio.Channel], method: str, status: int
) -> None:
    service, channel = served
    await _unary(channel, service, method)
    assert _requests(service, method, status) == 1
    duration = {"service": service, "method": method}
    assert REGISTRY.get_sample_value("jan_rpc_duration_seconds_count", duration) == 1


async def test_a_stream_refused_before_its_first_byte_counts_its_error_status(
    served: tuple[str, grpc.aio.Channel],
) -> None:
    service, channel = served
    messages = await _stream(channel, service, "StreamRefused")
    assert b"server_busy" in messages[0]
    assert _requests(service, "StreamRefused", 429) == 1


async def test_a_stream_that_fails_after_its_first_byte_answered_200(served: tuple[str, grpc.aio.Channel]) -> None:
    service, channel = served
    messages = await _stream(channel, service, "StreamFailsLate")
    assert b"upstream_timeout" in messages[-1]
    assert _requests(service, "StreamFailsLate", 200) == 1


async def test_a_stream_the_client_abandons_counts_as_499(served: tuple[str, grpc.aio.Channel]) -> None:
    service, channel = served
    call = channel.unary_stream(f"/{service}/StreamForever", _identity, _identity)(b"")
    assert await call.read() == b"tick"
    call.cancel()
    for _ in range(100):
        if _requests(service, "StreamForever", 499):
            break
        await asyncio.sleep(0.02)
    assert _requests(service, "StreamForever", 499) == 1


async def test_the_access_log_has_one_line_per_rpc_with_request_id_user_route_and_status(
    served: tuple[str, grpc.aio.Channel], caplog: pytest.LogCaptureFixture
) -> None:
    service, channel = served
    metadata = (
        ("x-request-id", "req-123"),
        ("x-user-id", "user_9"),
        ("x-envoy-original-method", "GET"),
        ("x-envoy-original-path", "/v1/things/abc?signature=s3cr3t"),
    )
    with caplog.at_level(logging.INFO, logger="jan.access"):
        await _unary(channel, service, "NotFound", metadata)
        # The server logs as its handler ends, which may be just after the client has the answer.
        for _ in range(100):
            if any(record.name == "jan.access" for record in caplog.records):
                break
            await asyncio.sleep(0.02)
    [record] = [record for record in caplog.records if record.name == "jan.access"]
    assert (record.request_id, record.user_id, record.status) == ("req-123", "user_9", 404)  # type: ignore[attr-defined]
    assert record.http_path == "/v1/things/abc"  # type: ignore[attr-defined]
    assert record.rpc == f"{service}/NotFound"  # type: ignore[attr-defined]
    assert "s3cr3t" not in record.getMessage() and "req-123" in record.getMessage()


async def test_metrics_endpoint_serves_the_registry_and_nothing_else() -> None:
    port = free_port()
    endpoint = MetricsEndpoint("127.0.0.1", port)
    await endpoint.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            metrics = await client.get("/metrics")
            missing = await client.get("/other")
        assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
        assert "# TYPE jan_rpc_requests_total counter" in metrics.text
        assert "process_resident_memory_bytes" in metrics.text
        assert missing.status_code == 404
        with pytest.raises(RuntimeError, match="JAN_METRICS_PORT"):
            await MetricsEndpoint("127.0.0.1", port).start()
    finally:
        await endpoint.stop()


class _Quiet(Tool):
    name = "quiet_tool"
    description = "Answers nothing."

    def __init__(self) -> None:
        self.input_schema = {
            "type": "object", "properties": {"fail": {"type": "boolean"}}, "additionalProperties": False
        }
        self.output_schema = {"type": "object"}

    async def call(self, context: ToolContext, arguments: dict[str, Any]) -> dict[str, Any]:
        if arguments.get("fail"):
            raise RuntimeError("broken")
        return {}


async def test_tool_calls_are_counted_by_tool_and_outcome() -> None:
    registry = ToolRegistry([_Quiet()])
    context = ToolContext(user_id="u", request_id="r")

    def calls(outcome: str, tool: str = "quiet_tool") -> float:
        return REGISTRY.get_sample_value("jan_tool_calls_total", {"tool": tool, "outcome": outcome}) or 0.0

    before = {outcome: calls(outcome) for outcome in ("ok", "error", "invalid_arguments")}
    unknown = calls("unknown_tool", "unknown")
    await registry.call("quiet_tool", {}, context)
    await registry.call("quiet_tool", {"fail": True}, context)
    with pytest.raises(Exception, match="Invalid arguments"):
        await registry.call("quiet_tool", {"other": 1}, context)
    with pytest.raises(UnknownTool):
        await registry.call("made_up_by_a_client", {}, context)
    assert {outcome: calls(outcome) - before[outcome] for outcome in before} == {
        "ok": 1, "error": 1, "invalid_arguments": 1
    }
    assert calls("unknown_tool", "unknown") == unknown + 1


def _redactor() -> RedactSecrets:
    settings = Settings(
        serper_api_key=SecretStr("serper-key-0123456789"),
        models=[ModelSettings(id="up", backend="openai", base_url="http://x/v1", api_key=SecretStr("upstream-key-42"))],
    )
    return RedactSecrets(secret_patterns("sk_live"), secret_values(settings))


@pytest.mark.parametrize(("text", "credential"), [
    ("Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
    ("key sk_live_" + "0a1b2c3d" * 6, "0a1b2c3d" * 6),
    ("refresh rt_" + "A" * 43, "A" * 43),
    ("token eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJl", "eyJzdWIiOiJ1c2VyIn0"),
    ("provider said serper-key-0123456789", "serper-key-0123456789"),
    ("upstream-key-42 leaked", "upstream-key-42"),
])
def test_credentials_are_redacted_from_messages_and_tracebacks(text: str, credential: str) -> None:
    record = logging.makeLogRecord({"msg": "saw %s", "args": (text,)})
    try:
        raise ValueError(text)
    except ValueError:
        record.exc_info = sys.exc_info()
    _redactor().filter(record)
    shown = JsonFormatter().format(record)
    assert REDACTED in record.getMessage() and "Traceback" in shown
    assert credential not in shown


def test_json_lines_carry_the_extra_fields() -> None:
    record = logging.makeLogRecord({"msg": "GET /v1/models 200", "name": "jan.access", "levelname": "INFO"})
    record.request_id = "req-1"
    line = json.loads(JsonFormatter().format(record))
    assert line.pop("time")
    assert line == {"level": "INFO", "logger": "jan.access", "message": "GET /v1/models 200", "request_id": "req-1"}


def test_the_grafana_dashboard_and_its_provisioning_parse() -> None:
    grafana = ROOT / "deploy" / "grafana"
    dashboard = json.loads((grafana / "dashboards" / "jan-server.json").read_text())
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert dashboard["uid"] == "jan-server" and len({panel["id"] for panel in dashboard["panels"]}) == len(
        dashboard["panels"]
    )
    assert all(panel["targets"] and all(target["expr"] for target in panel["targets"]) for panel in panels)
    assert {variable["name"] for variable in dashboard["templating"]["list"]} == {"datasource", "job", "envoy_job"}
    # One provisioning of each kind (two default data sources would stop Grafana), checked in test_compose.py.
    assert sorted(path.name for path in (grafana / "provisioning").rglob("*.y*ml")) == ["datasources.yml", "jan.yml"]
