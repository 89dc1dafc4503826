"""gRPC transport for jan.system.v1.SystemService (liveness and readiness)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc

from server.core.errors import unavailable
from server.core.rpc import unary
from server.gen.jan.system.v1 import system_pb2, system_pb2_grpc


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
