"""Where the gateway sends each service: one cluster for one process, a cluster per address for services apart."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from server.core.config import DEPLOYABLE_SERVICES, Settings
from server.protogen import service_names
from server.topology import SERVICES, gateway_topology, served_names


def test_one_process_is_one_cluster_and_needs_no_service_routes() -> None:
    topology = gateway_topology(Settings(_env_file=None, grpc_port=50123))
    assert [(u.cluster, u.host, u.port) for u in topology.upstreams] == [("jan_grpc", "127.0.0.1", 50123)]
    assert topology.service_routes() == []
    assert topology.cluster_of({"path": "/jan.auth.v1.AuthService/GuestLogin"}) == "jan_grpc"


def test_services_apart_get_a_cluster_per_address() -> None:
    settings = Settings(_env_file=None, service_targets={"auth": "auth:1", "llm": "llm:2", "media": "llm:2"})
    topology = gateway_topology(settings)
    assert {(u.cluster, u.host, u.port) for u in topology.upstreams} == {
        ("jan_auth", "auth", 1), ("jan_llm", "llm", 2), ("jan_responses", "127.0.0.1", 50051),
    }
    assert topology.cluster_by_service["media"] == "jan_llm"
    assert topology.cluster_by_service["mcp"] == "jan_responses"  # both at this process's own address
    assert topology.cluster_of({"path": "/jan.auth.v1.AuthService/GuestLogin"}) == "jan_auth"
    assert topology.cluster_of({"path": "/auth/guest-login"}) == "jan_llm"  # routed again once transcoded
    routes = dict(topology.service_routes())
    assert routes["/jan.admin.v1.ModelCatalogService/"] == "jan_llm"
    assert routes["/jan.admin.v1.AdminService/"] == "jan_auth"


def test_every_grpc_service_belongs_to_one_deployable_service() -> None:
    assert set(SERVICES) == DEPLOYABLE_SERVICES
    assert set(service_names()) <= served_names(frozenset(SERVICES))
    owners = [name for names in SERVICES.values() for name in names]
    assert len(owners) == len(set(owners))


@pytest.mark.parametrize("targets", [{"billing": "b:1"}, {"llm": "no-port"}])
def test_service_targets_are_checked(targets: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, service_targets=targets)
