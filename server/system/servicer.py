"""gRPC transport for jan.system.v1.SystemService: liveness, readiness, and the API docs (`/openapi.json`, `/docs`)."""

from __future__ import annotations

import asyncio
import mimetypes
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from google.api import httpbody_pb2

from server.core.errors import ApiError, unavailable
from server.core.rpc import http_body_unary, unary
from server.gen.jan.system.v1 import system_pb2, system_pb2_grpc
from server.protogen import DOCS_DIR, OPENAPI_DOCUMENT

DOCS_PAGE = "index.html"


def _http_body(content_type: str, data: bytes) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type=content_type, data=data)


def _docs_file(name: str) -> Path:
    """A file of the generated docs page, by name. Only the folder's own files: never a path out of it."""
    path = DOCS_DIR / (name or DOCS_PAGE)
    if "/" in name or "\\" in name or name.startswith(".") or not path.is_file():
        raise ApiError(404, f"No such file of the docs page: {name}", code="not_found")
    return path


class SystemServicer(system_pb2_grpc.SystemServiceServicer):
    def __init__(self, readiness_problem: Callable[[], Awaitable[str | None]]) -> None:
        """`readiness_problem` returns why the server cannot take traffic, or None when it can."""
        self._readiness_problem = readiness_problem

    @unary
    async def GetHealth(
        self, request: system_pb2.GetHealthRequest, context: grpc.aio.ServicerContext
    ) -> system_pb2.GetHealthResponse:
        return system_pb2.GetHealthResponse(status="ok")

    @unary
    async def GetReadiness(
        self, request: system_pb2.GetReadinessRequest, context: grpc.aio.ServicerContext
    ) -> system_pb2.GetReadinessResponse:
        problem = await self._readiness_problem()
        if problem:
            raise unavailable(problem)
        return system_pb2.GetReadinessResponse(status="ready")

    @http_body_unary(_http_body)
    async def GetOpenApiDocument(
        self, request: system_pb2.GetOpenApiDocumentRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        return _http_body("application/json", await asyncio.to_thread(OPENAPI_DOCUMENT.read_bytes))

    @http_body_unary(_http_body)
    async def GetDocsPage(
        self, request: system_pb2.GetDocsPageRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        path = await asyncio.to_thread(_docs_file, request.file)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type.endswith("javascript"):
            content_type += "; charset=utf-8"
        return _http_body(content_type, await asyncio.to_thread(path.read_bytes))
