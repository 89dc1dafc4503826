"""Every deployable service in its own process (`jan-server serve --service ...`) behind a gateway-only process,
on one PostgreSQL database: requests reach the right process through Envoy, and the services that call others
(responses → llm and mcp, llm → media) reach them over gRPC at JAN_SERVICE_TARGETS."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator

import grpc
import httpx
import openai
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.e2e.conftest import MODEL, assert_error_envelope
from tests.support.media_images import unique_png
from tests.support.ports import free_port
from tests.support.postgres import PostgresServer
from tests.support.stack import ROOT, Stack, make_stack

SERVICES = ("auth", "llm", "responses", "media", "mcp")


@pytest.fixture(scope="module")
def split(postgres: PostgresServer) -> Iterator[dict[str, Stack]]:
    base = make_stack(postgres.create_database("jan_split"), models=json.dumps([
        {"id": MODEL, "path": _bundled_model(), "pool_size": 1, "threads": 1},
    ]))
    ports = {service: free_port() for service in SERVICES}
    base.env["JAN_SERVICE_TARGETS"] = json.dumps({s: f"127.0.0.1:{port}" for s, port in ports.items()})
    migrated = subprocess.run([sys.executable, "-m", "server.cli", "migrate"], cwd=ROOT, env=base.env,
                              capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    # One host: each process its own gRPC and metrics port (in Kubernetes each pod has its own address).
    processes = {
        service: Stack({**base.env, "JAN_GRPC_PORT": str(port), "JAN_METRICS_PORT": str(free_port())},
                       command=("serve", "--service", service))
        for service, port in ports.items()
    }
    processes["gateway"] = Stack({**base.env, "JAN_METRICS_PORT": str(free_port())},
                                 command=("serve", "--service", "gateway"))
    try:
        for process in processes.values():
            process.start()
        yield processes
    finally:
        for process in processes.values():
            process.stop()


def _bundled_model() -> str:
    from server.core.config import bundled_smollm2_path

    return bundled_smollm2_path()


@pytest.fixture(scope="module")
def gateway(split: dict[str, Stack]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=split["gateway"].base_url, timeout=60) as client:
        yield client


def _login(gateway: httpx.Client) -> dict[str, str]:
    response = gateway.post("/llm/auth/guest-login")
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def test_each_process_serves_only_its_services(split: dict[str, Stack]) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    for service in SERVICES:
        with grpc.insecure_channel(split[service].grpc_target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest(service="")).status == serving
            llm = health_pb2.HealthCheckRequest(service="jan.llm.v1.LlmService")
            if service == "llm":
                assert health.Check(llm).status == serving
            else:
                with pytest.raises(grpc.RpcError) as raised:
                    health.Check(llm)
                assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert "serving llm" in "".join(split["llm"].output)


def test_requests_reach_their_service_through_the_gateway(split: dict[str, Stack], gateway: httpx.Client) -> None:
    headers = _login(gateway)
    client = openai.OpenAI(base_url=f"{split['gateway'].base_url}/v1",
                           api_key=headers["Authorization"].removeprefix("Bearer "), max_retries=0)
    assert [model.id for model in client.models.list()] == [MODEL]
    completion = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                                max_tokens=4)
    assert completion.choices[0].message.content is not None
    assert gateway.post("/v1/conversations", headers=headers, json={}).status_code == 200
    tools = gateway.get("/v1/mcp/tools", headers=headers)
    assert tools.status_code == 200 and tools.json()["tools"]

    # An API key is checked by the auth process (Envoy's ext_authz).
    key = gateway.post("/v1/auth/api-keys", headers=headers, json={"name": "split"})
    assert key.status_code == 201, key.text
    assert gateway.get("/v1/models", headers={"X-API-Key": key.json()["key"]}).status_code == 200


def test_services_call_each_other_over_grpc(split: dict[str, Stack], gateway: httpx.Client) -> None:
    headers = _login(gateway)
    png = unique_png()
    upload = gateway.post("/v1/media", headers=headers, json={
        "source": {"type": "data_url", "data_url": "data:image/png;base64," + base64.b64encode(png).decode()},
    })
    assert upload.status_code == 200, upload.text
    placeholder = f"data:image/png;{upload.json()['id']}"

    # llm → media: the placeholder in the text is resolved by the media process (another user's would be refused).
    chat = {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": f"Describe {placeholder}"}]}
    assert gateway.post("/v1/chat/completions", headers=headers, json=chat).status_code == 200
    refused = gateway.post("/v1/chat/completions", headers=_login(gateway), json=chat)
    assert_error_envelope(refused, 400, type="invalid_request_error", code="unknown_media_id")

    # responses → llm (the model) and mcp (the tools it may offer).
    response = gateway.post("/v1/responses", headers=headers, json={
        "model": MODEL, "input": "Say hi.", "max_output_tokens": 8, "tool_choice": "none",
    })
    assert response.status_code == 200, response.text
    assert response.json()["status"] in ("completed", "incomplete")


def test_a_stopped_service_fails_alone(split: dict[str, Stack], gateway: httpx.Client) -> None:
    headers = _login(gateway)
    split["media"].stop()
    assert_error_envelope(gateway.get("/v1/media", headers=headers), 503, type="internal_error")
    assert gateway.get("/v1/models", headers=headers).status_code == 200
