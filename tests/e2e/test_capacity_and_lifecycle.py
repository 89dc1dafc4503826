"""Capacity limits, disconnects, broken models, a dead upstream and shutdown, each on a stack built for it."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from server.core.config import Settings, bundled_smollm2_path
from server.gateway.envoy import EnvoyProcess
from server.protogen import DESCRIPTOR_SET
from tests.e2e.conftest import MODEL, assert_error_envelope, guest_login
from tests.support.ports import free_port
from tests.support.stack import Stack, make_stack

LONG = [{"role": "user", "content": "Write a very long story about a dragon who learns to cook."}]


@pytest.fixture(scope="module")
def tight_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One model instance and no waiting room, plus a model whose file is not a GGUF."""
    broken = tmp_path_factory.mktemp("models") / "broken.gguf"
    broken.write_bytes(b"this is not a gguf file")
    models = [
        {"id": MODEL, "path": bundled_smollm2_path(), "pool_size": 1, "queue_size": 0, "context_size": 1024},
        {"id": "broken-model", "path": str(broken)},
    ]
    stack = make_stack(models=json.dumps(models))
    stack.start()
    yield stack
    stack.stop()


def _sdk(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=guest_login(stack)["access_token"], max_retries=0)


def test_a_full_queue_is_429_not_a_hang(tight_stack: Stack) -> None:
    client = _sdk(tight_stack)
    with client.chat.completions.create(model=MODEL, messages=LONG, max_tokens=500, stream=True) as busy:
        next(iter(busy))  # the only instance is now generating
        started = time.monotonic()
        with pytest.raises(openai.RateLimitError) as raised:
            client.chat.completions.create(model=MODEL, messages=LONG, max_tokens=5)
        assert time.monotonic() - started < 2
        assert raised.value.code == "server_busy"


def _create_within(client: openai.OpenAI, seconds: float, **request: Any) -> Any:
    """The first create that is not refused as busy, polling for at most `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return client.chat.completions.create(model=MODEL, messages=LONG, **request)
        except openai.RateLimitError:
            assert time.monotonic() < deadline, "the model stayed busy"
            time.sleep(0.05)


def test_a_disconnected_client_frees_the_model_within_a_second(tight_stack: Stack) -> None:
    client = _sdk(tight_stack)
    # The previous test's client has just left too: its generation may still be stopping.
    stream = _create_within(client, 5, max_tokens=900, stream=True)
    next(iter(stream))
    stream.close()
    _create_within(client, 1.5, max_tokens=1)


def test_a_model_that_failed_to_load_is_503(tight_stack: Stack) -> None:
    client = _sdk(tight_stack)
    with pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(model="broken-model", messages=LONG)
    assert raised.value.status_code == 503
    response = httpx.get(f"{tight_stack.base_url}/readyz")
    assert_error_envelope(response, 503, type="internal_error")
    assert "broken-model" in response.json()["error"]["message"]


async def test_envoy_with_no_upstream_answers_503_in_the_envelope(tmp_path: Path) -> None:
    from server.auth.tokens import TokenIssuer

    settings = Settings(data_dir=tmp_path, port=free_port(), grpc_port=free_port(), envoy_admin_port=free_port())
    await TokenIssuer(settings).load_or_create()
    envoy = EnvoyProcess(settings, DESCRIPTOR_SET)
    await envoy.start()
    try:
        async with httpx.AsyncClient() as http:
            response = await http.get(f"http://127.0.0.1:{settings.port}/healthz")
        assert_error_envelope(response, 503, type="internal_error", code="service_unavailable")
    finally:
        await envoy.stop()


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_sigterm_lets_short_streams_finish_and_ends_long_ones_with_an_error_event() -> None:
    stack = make_stack(shutdown_grace_seconds="3")
    stack.start()
    client = _sdk(stack)
    short = iter(client.chat.completions.create(model=MODEL, messages=LONG, max_tokens=24, stream=True))
    next(short)
    stream = client.chat.completions.create(model=MODEL, messages=LONG, max_tokens=1500, stream=True)
    chunks = iter(stream)
    next(chunks)
    threading.Timer(0.2, stack.stop).start()
    # The short answer completes within the grace period; the long one is ended after it.
    assert [chunk.choices[0].finish_reason for chunk in short if chunk.choices][-1] in ("length", "stop")
    with pytest.raises(openai.APIError) as raised:
        for _ in chunks:
            pass
    assert raised.value.code == "server_shutting_down"
    deadline = time.monotonic() + 20
    while stack.process is not None and stack.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stack.process is not None and stack.process.returncode == 0
    assert not _port_open(int(stack.env["JAN_PORT"]))
    assert not _port_open(int(stack.env["JAN_GRPC_PORT"]))
