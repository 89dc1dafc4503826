"""The triton backend in-process against the Triton test server, for what the end-to-end tests cannot time: a Triton
that comes up after us, a stream that goes silent, and a shutdown mid-stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.core.config import ModelSettings
from server.core.errors import ApiError
from server.llm.backends.base import ChatMessage, Finish, GenerationEvent, SamplingParams, TextDelta
from server.llm.backends.triton import TritonBackend
from tests.support.ports import free_port
from tests.support.triton_test_server import DEFAULT_MODEL, TritonTestServer

TEMPLATE = Path(__file__).resolve().parents[2] / "triton_models" / DEFAULT_MODEL / "tokenizer_config.json"


def backend_for(address: str, **settings: object) -> TritonBackend:
    return TritonBackend(ModelSettings.model_validate({
        "id": "m", "backend": "triton", "triton_url": address, "upstream_model": DEFAULT_MODEL,
        "chat_template_path": str(TEMPLATE), "connect_timeout_seconds": 1, **settings,
    }))


async def answer(events: AsyncIterator[GenerationEvent]) -> list[GenerationEvent]:
    return [event async for event in events]


async def test_a_triton_that_comes_up_after_us_is_used_without_a_restart() -> None:
    port = free_port()
    backend = backend_for(f"127.0.0.1:{port}", probe_interval_seconds=0.2)
    await backend.start()  # Triton is down: we start anyway, not ready
    server = TritonTestServer(port=port)
    try:
        assert not backend.ready
        with pytest.raises(ApiError) as down:
            await answer(backend.generate([ChatMessage("user", "Hi")], SamplingParams()))
        assert (down.value.status, down.value.code) == (503, "model_unavailable")
        server.start_in_thread()
        for _ in range(100):
            if backend.ready:
                break
            await asyncio.sleep(0.05)
        assert backend.ready
        events = await answer(backend.generate([ChatMessage("user", "Hi")], SamplingParams()))
        assert "".join(event.text for event in events if isinstance(event, TextDelta)) == "You said: Hi"
        assert isinstance(events[-1], Finish) and events[-1].finish_reason == "stop"
    finally:
        await backend.close()
        if server.port and hasattr(server, "_server"):
            server.stop()


@pytest.fixture
async def triton_server() -> AsyncIterator[TritonTestServer]:
    server = TritonTestServer(slow_delay=2.0)
    server.start_in_thread()
    yield server
    server.stop()


async def test_a_silent_stream_is_a_504_and_cancelled_at_triton(triton_server: TritonTestServer) -> None:
    backend = backend_for(triton_server.address, timeout_seconds=0.3)
    await backend.start()
    try:
        with pytest.raises(ApiError) as silent:
            await answer(backend.generate([ChatMessage("user", "[slow] hello")], SamplingParams()))
        assert (silent.value.status, silent.value.code) == (504, "upstream_timeout")
        request_id = triton_server.requests[-1].request_id
        for _ in range(100):
            if request_id in triton_server.cancelled:
                break
            await asyncio.sleep(0.02)
        assert request_id in triton_server.cancelled
    finally:
        await backend.close()


async def test_closing_ends_a_running_stream_with_server_shutting_down(triton_server: TritonTestServer) -> None:
    triton_server.slow_delay = 0.05
    backend = backend_for(triton_server.address)
    await backend.start()
    events = backend.generate([ChatMessage("user", "[long] [slow]")], SamplingParams(max_tokens=1000))
    assert isinstance(await anext(events), TextDelta)
    await backend.close()
    with pytest.raises(ApiError) as closed:
        await answer(events)
    assert (closed.value.status, closed.value.code) == (503, "server_shutting_down")
