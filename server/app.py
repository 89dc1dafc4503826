"""Composition root: builds every service from the settings, serves them over gRPC, and runs Envoy in front.

Start order: read the identity provider's metadata (when one is configured), migrate the database, load (or create)
the signing key and write the JWKS Envoy reads, load the models and the embedding model, start the gRPC server, then
Envoy. Stop order is the reverse, so in-flight streams finish (or end cleanly at the grace deadline) before the
gateway goes away.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy import text

from server.admin.service import AdminService
from server.admin.servicer import AdminServicer
from server.auth.api_keys import ApiKeyAuthenticator
from server.auth.ext_authz import ExtAuthzServicer
from server.auth.oidc.direct import OidcTokenUsers
from server.auth.oidc.login import OidcLogin
from server.auth.oidc.provider import OidcProvider
from server.auth.service import AuthService
from server.auth.servicer import AuthServicer
from server.auth.tokens import TokenIssuer
from server.core.config import Settings, usable_cpus
from server.core.db import create_engine, session_factory
from server.core.errors import ApiError
from server.core.migrate import run_migrations
from server.core.observability.endpoint import MetricsEndpoint
from server.core.observability.interceptor import RpcObserver
from server.core.observability.metrics import DATABASE_POOLS
from server.core.observability.progress import step
from server.core.observability.tracing import Tracing
from server.gateway.envoy import EnvoyProcess
from server.gen.jan.admin.v1 import admin_pb2_grpc, model_catalog_pb2_grpc
from server.gen.jan.auth.v1 import auth_pb2_grpc
from server.gen.jan.llm.v1 import conversations_pb2_grpc, llm_pb2_grpc, projects_pb2_grpc
from server.gen.jan.mcp.v1 import mcp_pb2_grpc
from server.gen.jan.media.v1 import media_pb2_grpc
from server.gen.jan.responses.v1 import responses_pb2_grpc
from server.gen.jan.system.v1 import system_pb2_grpc
from server.llm.catalog.provider_keys import ProviderKeyCipher, load_or_create_secret
from server.llm.catalog.router import ModelRouter
from server.llm.catalog.service import CatalogAdmin
from server.llm.catalog.servicer import ModelCatalogServicer
from server.llm.conversations.service import ConversationService
from server.llm.conversations.servicer import ConversationServicer
from server.llm.cpu_budget import ThreadBudget
from server.llm.embeddings import MiniLMEmbedder
from server.llm.models import ModelRegistry
from server.llm.projects.service import ProjectService
from server.llm.projects.servicer import ProjectServicer
from server.llm.servicer import LlmServicer
from server.mcp.servicer import McpServicer
from server.media.client import RemoteMediaResolver
from server.media.limits import grpc_message_limit
from server.media.service import MediaService
from server.media.servicer import MediaServicer
from server.protogen import DESCRIPTOR_SET, service_names
from server.responses.servicer import ResponseServicer
from server.system.health import HealthReporter
from server.system.servicer import SystemServicer
from server.topology import ALL_SERVICES, served_names, target_of

log = logging.getLogger(__name__)

# After the grace period, how long ended generations get to send their error event before RPCs are cancelled.
ERROR_EVENT_SECONDS = 5.0


class JanServer:
    """The services of `services` (all by default) in this process's gRPC server, and Envoy when `gateway`.

    Each deployable service may run in its own process (server/topology.py); those it calls are then reached at
    their JAN_SERVICE_TARGETS. Only the parts the chosen services need are started. `migrate`: upgrade the schema
    at start (split deployments run `jan-server migrate` once instead, before the services)."""

    def __init__(
        self, settings: Settings, *, gateway: bool = True, services: frozenset[str] = ALL_SERVICES,
        migrate: bool = True,
    ) -> None:
        self.settings = settings
        self._gateway = gateway
        self._services = services
        self._migrate = migrate
        self._engine = create_engine(settings.database)
        # One CPU budget for everything that computes here: chat models and the embedder take turns sharing it.
        cpu = ThreadBudget(usable_cpus())
        self._registry = ModelRegistry.from_settings(settings.models, cpu)
        # JAN_MODELS and the admins' catalog; set up in start(), after migrations.
        self._models: ModelRouter | None = None
        self._catalog: CatalogAdmin | None = None
        # Shared by POST /v1/embeddings and the file_search tools; a load failure makes only those answer 503.
        self._embedder = MiniLMEmbedder.from_settings(settings, cpu)
        # Started after migrations (its retention sweep queries the database). Chat resolves placeholders with it.
        self.media = MediaService(settings, session_factory(self._engine))
        self._grpc: grpc.aio.Server | None = None
        self._health: HealthReporter | None = None
        self._envoy: EnvoyProcess | None = None
        self._idp = OidcProvider(settings)
        # The gateway's spans are Envoy's own ("jan-gateway"); these are the services'.
        self._tracing = Tracing(
            settings, "jan-server" if services == ALL_SERVICES else "jan-" + ("-".join(sorted(services)) or "gateway")
        )
        self._metrics = MetricsEndpoint(settings.metrics_host, settings.metrics_port) if settings.metrics_port else None

    async def start(self) -> None:
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        # Metrics first: a taken port fails the start at once, and the model loading that follows can be watched.
        if self._metrics is not None:
            await self._metrics.start()
        DATABASE_POOLS.watch(self._engine)
        # Before the gRPC server and clients exist: the instrumentations wrap their constructors.
        self._tracing.start(self._engine)
        # First, so that an unreachable identity provider fails the start before the slow parts.
        idp_jwks_uri = await self._idp_jwks_uri() if self._gateway else ""
        if self._migrate:
            with step("Migrating the database"):
                await run_migrations(settings.database)
        # Our signing key: the auth service mints with it, and Envoy verifies with its JWKS.
        issuer = TokenIssuer(settings)
        await issuer.load_or_create()
        if "llm" in self._services:
            with step(f"Loading models ({', '.join(m.id for m in settings.models)}) and the embedding model"):
                await asyncio.gather(self._registry.start(), self._embedder.start())
            cipher = ProviderKeyCipher(await asyncio.to_thread(load_or_create_secret, settings))
            self._models = ModelRouter(
                self._registry, settings.models, session_factory(self._engine), cipher,
                settings.catalog_refresh_seconds,
            )
            await self._models.start()
            self._catalog = CatalogAdmin(settings, session_factory(self._engine), self._models, cipher)
        elif "mcp" in self._services:
            with step("Loading the embedding model"):
                await self._embedder.start()
        if "media" in self._services:
            await self.media.start()
        if self._services:
            await self._start_grpc(issuer)
        if self._gateway:
            self._envoy = EnvoyProcess(settings, DESCRIPTOR_SET, idp_jwks_uri=idp_jwks_uri)
            with step("Starting Envoy"):
                await self._envoy.start()

    async def _start_grpc(self, issuer: TokenIssuer) -> None:
        settings = self.settings
        server = grpc.aio.server(
            interceptors=[RpcObserver()],  # metrics and the access log of every RPC
            options=[
                # Envoy already capped the body (at max_request_bytes, more on media upload routes).
                ("grpc.max_receive_message_length", grpc_message_limit(settings)),
                ("grpc.max_send_message_length", grpc_message_limit(settings)),
                # A second server on the same port must fail to bind, not share the traffic.
                ("grpc.so_reuseport", 0),
            ]
        )
        self._add_services(server, issuer)
        names = [name for name in service_names() if name in served_names(self._services)]
        health = HealthReporter(names, self._database_problem, self._models_problem)
        health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
        await health.start()
        self._health = health
        reflection.enable_server_reflection(
            (*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
        )
        if server.add_insecure_port(settings.grpc_target) == 0:
            raise RuntimeError(f"cannot bind gRPC port {settings.grpc_target}")
        await server.start()
        self._grpc = server

    async def _idp_jwks_uri(self) -> str:
        """Where Envoy gets the identity provider's keys: configured, or from its metadata; "" without a provider."""
        settings = self.settings
        if not settings.oidc_issuer or settings.oidc_jwks_uri:
            return settings.oidc_jwks_uri
        try:
            return (await self._idp.discovery()).jwks_uri
        except ApiError as error:
            raise RuntimeError(
                f"{error.message}. Start the identity provider first, or set JAN_OIDC_JWKS_URI to start without it"
            ) from None

    def _add_services(self, server: grpc.aio.Server, issuer: TokenIssuer) -> None:
        """The chosen services' servicers; SystemService (health, readiness) in every process."""
        settings, sessions, services = self.settings, session_factory(self._engine), self._services
        system_pb2_grpc.add_SystemServiceServicer_to_server(SystemServicer(self._readiness_problem), server)
        if "auth" in services:
            auth = AuthService(settings, sessions, issuer)
            oidc = OidcLogin(settings, sessions, self._idp, auth)
            auth_pb2_grpc.add_AuthServiceServicer_to_server(AuthServicer(auth, oidc), server)
            external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
                ExtAuthzServicer(
                    ApiKeyAuthenticator(settings, sessions), OidcTokenUsers(settings, oidc) if oidc.enabled else None
                ),
                server,
            )
            admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(AdminService(sessions)), server)
        if "llm" in services:
            assert self._models is not None and self._catalog is not None, "start() sets up the models first"
            resolve_media = (
                self.media.resolve_placeholders if "media" in services
                else RemoteMediaResolver(grpc.aio.insecure_channel(target_of(settings, "media")))
            )
            llm_pb2_grpc.add_LlmServiceServicer_to_server(
                LlmServicer(self._models, sessions, self._embedder, resolve_media), server
            )
            projects_pb2_grpc.add_ProjectServiceServicer_to_server(ProjectServicer(ProjectService(sessions)), server)
            conversations_pb2_grpc.add_ConversationServiceServicer_to_server(
                ConversationServicer(ConversationService(sessions)), server
            )
            model_catalog_pb2_grpc.add_ModelCatalogServiceServicer_to_server(
                ModelCatalogServicer(self._catalog), server
            )
        if "mcp" in services:
            mcp_pb2_grpc.add_McpServiceServicer_to_server(
                McpServicer.from_settings(settings, sessions, self._embedder), server
            )
        if "responses" in services:
            responses_pb2_grpc.add_ResponseServiceServicer_to_server(
                ResponseServicer.from_settings(settings, sessions), server
            )
        if "media" in services:
            media_pb2_grpc.add_MediaServiceServicer_to_server(MediaServicer(self.media), server)

    async def _database_problem(self) -> str | None:
        try:
            async with self._engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception as error:
            return f"database unavailable: {error.__class__.__name__}"
        return None

    def _models_problem(self) -> str | None:
        return self._registry.readiness_problem() if "llm" in self._services else None

    async def _readiness_problem(self) -> str | None:
        return await self._database_problem() or self._models_problem()

    def listening_line(self) -> str:
        if not self._services:
            return f"Jan Server gateway listening on {self.settings.public_url} (Envoy only)"
        grpc_part = f"gRPC on {self.settings.grpc_target}"
        if self._services != ALL_SERVICES:
            grpc_part += f", serving {', '.join(sorted(self._services))}"
        if self._gateway:
            return f"Jan Server listening on {self.settings.public_url} (Envoy; {grpc_part})"
        return f"Jan Server listening on {grpc_part} (no gateway)"

    async def stop(self) -> None:
        # Health checks see NOT_SERVING and new RPCs are refused; in-flight requests get shutdown_grace_seconds to
        # finish. Generations still running then are ended: their streams get a `server_shutting_down` error event
        # through the still-running Envoy before the gRPC server and the gateway go away.
        grace = self.settings.shutdown_grace_seconds
        stopping = None
        if self._grpc is not None and self._health is not None:
            await self._health.drain()
            stopping = asyncio.create_task(self._grpc.stop(grace + ERROR_EVENT_SECONDS))
            await asyncio.wait({stopping}, timeout=grace)
        if self._models is not None:
            await self._models.close()
        if "llm" in self._services:
            await self._registry.close()
        if stopping is not None:
            await stopping
        if self._services & {"llm", "mcp"}:
            await self._embedder.close()
        if "media" in self._services:
            await self.media.stop()
        if self._envoy is not None:
            await self._envoy.stop()
        await self._idp.close()
        await self._engine.dispose()
        await asyncio.to_thread(self._tracing.stop)
        DATABASE_POOLS.forget(self._engine)
        if self._metrics is not None:
            await self._metrics.stop()
