"""OpenTelemetry traces, off unless `JAN_OTLP_ENDPOINT` is set.

When on, spans go over OTLP/gRPC to that collector from: the gRPC server (one span per RPC, the parent taken from
the W3C `traceparent` Envoy sends, so the gateway's span and ours form one trace), the gRPC clients between
services, SQLAlchemy (each query) and httpx (upstream models, providers, web tools). Envoy reports its own spans to
the same collector (envoy.yaml.j2). Each RPC span carries `jan.request_id`, the `x-request-id` that error bodies and
logs repeat: the RPC interceptor (interceptor.py) sets it, inside the span the tracing interceptor opened.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

from server.core.config import Settings

log = logging.getLogger(__name__)

REQUEST_ID_ATTRIBUTE = "jan.request_id"


class Tracing:
    """The process's tracer provider and instrumentations; `enabled` only with an OTLP endpoint."""

    def __init__(self, settings: Settings, service_name: str) -> None:
        self._provider: TracerProvider | None = None
        self._endpoint = settings.otlp_endpoint
        self._service_name = service_name

    @property
    def enabled(self) -> bool:
        return bool(self._endpoint)

    def start(self, engine: AsyncEngine) -> None:
        """Before the gRPC server and clients are created: the instrumentations wrap grpc.aio's constructors."""
        if not self.enabled:
            return
        # Imported only when tracing is on: a server without it never loads the SDK or the exporter's protos.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, GrpcAioInstrumentorServer
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        url = urlsplit(self._endpoint)
        exporter = OTLPSpanExporter(endpoint=url.netloc or self._endpoint, insecure=url.scheme != "https")
        provider = TracerProvider(resource=Resource.create({"service.name": self._service_name}))
        provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        GrpcAioInstrumentorServer().instrument()
        GrpcAioInstrumentorClient().instrument()
        HTTPXClientInstrumentor().instrument()
        # Its declared range stops before SQLAlchemy 2.1, whose engine events it uses unchanged (tested).
        SQLAlchemyInstrumentor().instrument(engine=engine.sync_engine, skip_dep_check=True)
        self._provider = provider
        log.info("tracing to %s as %s", self._endpoint, self._service_name)

    def stop(self) -> None:
        """Blocking: flushes the spans still batched (run it in a thread)."""
        if self._provider is not None:
            self._provider.shutdown()


def annotate_request(request_id: str) -> None:
    """Puts the request id on the current RPC's span; nothing when tracing is off or the caller sent no id."""
    if not request_id:
        return
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)
