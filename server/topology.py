"""The deployable services, the gRPC services each one serves, and where each runs.

One process serves all of them by default (`jan-server run`). `jan-server serve --service NAME` runs some of them
alone, for separate deployments; `JAN_SERVICE_TARGETS` then tells the gateway and the services that call others
(responses → llm and mcp, llm → media) where each one is. Every process also serves SystemService, health and
reflection.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.core.config import DEPLOYABLE_SERVICES, Settings

SERVICES: dict[str, tuple[str, ...]] = {
    # Users, tokens, API keys and roles; Envoy's ext_authz check.
    "auth": ("jan.auth.v1.AuthService", "jan.admin.v1.AdminService", "envoy.service.auth.v3.Authorization"),
    # Models, chat, conversations and projects, and the model catalog (its routing lives with the models).
    "llm": ("jan.llm.v1.LlmService", "jan.llm.v1.ConversationService", "jan.llm.v1.ProjectService",
            "jan.admin.v1.ModelCatalogService"),
    "responses": ("jan.responses.v1.ResponseService",),
    "media": ("jan.media.v1.MediaService",),
    "mcp": ("jan.mcp.v1.McpService",),
}
ALL_SERVICES = DEPLOYABLE_SERVICES
# Where requests go that no service claims (the transcoder's own errors); SystemService answers in every process.
DEFAULT_SERVICE = "llm"


def served_names(services: frozenset[str]) -> frozenset[str]:
    """The gRPC services a process running `services` serves (SystemService in every one)."""
    return frozenset({"jan.system.v1.SystemService", *(name for service in services for name in SERVICES[service])})


def target_of(settings: Settings, service: str) -> str:
    """host:port of a service's gRPC server: JAN_SERVICE_TARGETS, or this process's own."""
    return settings.service_targets.get(service) or settings.grpc_target


@dataclass(frozen=True)
class Upstream:
    """One of Envoy's gRPC clusters: a distinct address serving some of the services."""

    cluster: str
    host: str
    port: int


@dataclass(frozen=True)
class GatewayTopology:
    upstreams: list[Upstream]
    cluster_by_service: dict[str, str]

    def cluster_of(self, match: dict[str, str]) -> str:
        """The cluster for a route's match: a native gRPC path goes to the service serving it; HTTP paths go to the
        default (the transcoder turns them into gRPC paths, and the route is chosen again for those)."""
        path = match.get("path") or match.get("prefix") or ""
        for service, names in SERVICES.items():
            if any(path.startswith(f"/{name}/") for name in names):
                return self.cluster_by_service[service]
        return self.cluster_by_service[DEFAULT_SERVICE]

    def service_routes(self) -> list[tuple[str, str]]:
        """(gRPC path prefix, cluster) for every gRPC service, when services run apart; none when one process
        serves them all (the catch-all route does)."""
        if len(self.upstreams) == 1:
            return []
        return [(f"/{name}/", self.cluster_by_service[service]) for service, names in SERVICES.items()
                for name in names if not name.startswith("envoy.")]


def gateway_topology(settings: Settings) -> GatewayTopology:
    clusters: dict[str, Upstream] = {}
    cluster_by_service = {}
    for service in SERVICES:
        target = target_of(settings, service)
        if target not in clusters:
            host, _, port = target.rpartition(":")
            name = "jan_grpc" if target == settings.grpc_target and not settings.service_targets else f"jan_{service}"
            clusters[target] = Upstream(name, host.strip("[]"), int(port))
        cluster_by_service[service] = clusters[target].cluster
    return GatewayTopology(list(clusters.values()), cluster_by_service)
