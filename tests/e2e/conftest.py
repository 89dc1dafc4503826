"""Clients for the end-to-end tests: raw httpx and the official `openai` SDK, both through Envoy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.stack import Stack

MODEL = "smollm2-135m-instruct"


def guest_login(stack: Stack) -> dict[str, str]:
    response = httpx.post(f"{stack.base_url}/llm/auth/guest-login")
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, timeout=60) as client:
        yield client


@pytest.fixture
def guest(stack: Stack) -> dict[str, str]:
    return guest_login(stack)


@pytest.fixture
def auth_headers(guest: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {guest['access_token']}"}


@pytest.fixture
def client(stack: Stack, guest: dict[str, str]) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=guest["access_token"], max_retries=0) as sdk:
        yield sdk


def mcp_rpc(stack: Stack, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """The JSON-RPC result of one stateless `POST /v1/mcp` request by a fresh guest."""
    token = guest_login(stack)["access_token"]
    response = httpx.post(
        f"{stack.base_url}/v1/mcp",
        content=json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                 "Accept": "application/json, text/event-stream"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    return result


def assert_error_envelope(response: httpx.Response, status: int, *, type: str, code: str | None = None,
                          param: str | None = None) -> dict[str, object]:
    """Every error: the status, the OpenAI envelope, and request_id equal to the x-request-id header."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) >= {"type", "code", "message", "param", "request_id"}
    assert error["type"] == type
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    assert error["message"]
    assert error["request_id"] and error["request_id"] == response.headers["x-request-id"]
    return error
