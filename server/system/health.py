"""grpc.health.v1 statuses that follow readiness, for Envoy's health check and Kubernetes' gRPC probes.

The process as a whole (service "") and every service are NOT_SERVING while the database is unreachable; the
services that generate (LlmService, ResponseService) also while a model is not ready. On shutdown everything turns
NOT_SERVING at once and stays so, so load balancers stop sending requests while in-flight ones finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# The services that need the models, besides the database.
MODEL_SERVICES = frozenset({"jan.llm.v1.LlmService", "jan.responses.v1.ResponseService"})
REPORT_INTERVAL_SECONDS = 5.0


class HealthReporter:
    def __init__(
        self,
        services: list[str],
        database_problem: Callable[[], Awaitable[str | None]],
        models_problem: Callable[[], str | None],
    ) -> None:
        self.servicer = health_aio.HealthServicer()
        self._services = services
        self._database_problem = database_problem
        self._models_problem = models_problem
        self._reporting: asyncio.Task[None] | None = None
        self._last: tuple[str | None, str | None] | None = None

    async def start(self) -> None:
        await self.report()
        self._reporting = asyncio.create_task(self._report_periodically())

    async def report(self) -> None:
        database, models = await self._database_problem(), self._models_problem()
        if (database, models) != self._last and self._last is not None:
            log.warning("health: database %s, models %s", database or "ok", models or "ok")
        self._last = (database, models)
        await self.servicer.set("", NOT_SERVING if database else SERVING)
        for name in self._services:
            down = database or (models if name in MODEL_SERVICES else None)
            await self.servicer.set(name, NOT_SERVING if down else SERVING)

    async def _report_periodically(self) -> None:
        while True:
            await asyncio.sleep(REPORT_INTERVAL_SECONDS)
            try:
                await self.report()
            except Exception:  # the next round tries again; a stale status beats a dead reporter
                log.exception("updating the health statuses failed")

    async def drain(self) -> None:
        """Everything NOT_SERVING from now on (shutdown)."""
        if self._reporting is not None:
            self._reporting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reporting
        await self.servicer.enter_graceful_shutdown()
