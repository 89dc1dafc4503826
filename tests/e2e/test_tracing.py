"""Traces through the real Envoy: with JAN_OTLP_ENDPOINT set, Envoy's span of a request and the services' spans
(the RPC, its SQL) arrive at the collector as one trace, and the RPC span carries the request id."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.otlp_collector import OtlpCollector, ReceivedSpan
from tests.support.stack import Stack, make_stack


@pytest.fixture(scope="module")
def collector() -> Iterator[OtlpCollector]:
    collector = OtlpCollector()
    collector.start()
    yield collector
    collector.stop()


@pytest.fixture(scope="module")
def traced_stack(collector: OtlpCollector) -> Iterator[Stack]:
    stack = make_stack(otlp_endpoint=collector.endpoint)
    stack.start()
    yield stack
    stack.stop()


def _trace_of(collector: OtlpCollector, request_id: str, within: float = 20) -> list[ReceivedSpan]:
    """Every span of the trace whose RPC span carries `request_id`, once Envoy's has arrived too."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        spans = collector.spans
        rpc = next((s for s in spans if s.attributes.get("jan.request_id") == request_id), None)
        if rpc is not None:
            trace = [s for s in spans if s.trace_id == rpc.trace_id]
            if any(s.service == "jan-gateway" for s in trace):
                return trace
        time.sleep(0.2)
    raise AssertionError(f"no complete trace for request {request_id}: {collector.spans[-10:]}")


def test_a_request_is_one_trace_from_envoy_to_the_database(traced_stack: Stack, collector: OtlpCollector) -> None:
    with httpx.Client(base_url=traced_stack.base_url, timeout=30) as http:
        response = http.post("/llm/auth/guest-login")
    assert response.status_code == 201
    trace = _trace_of(collector, response.headers["x-request-id"])

    gateway = [s for s in trace if s.service == "jan-gateway"]
    rpc = next(s for s in trace if s.service == "jan-server" and s.name == "/jan.auth.v1.AuthService/GuestLogin")
    assert gateway and rpc.parent_span_id in {s.span_id for s in gateway}
    sql = [s for s in trace if s.service == "jan-server" and s.name.split()[0] in ("INSERT", "SELECT", "connect")]
    assert sql, [(s.service, s.name, s.trace_id == rpc.trace_id) for s in collector.spans]
