"""The openai backend's wire format (request bodies, SSE chunk parsing) and its error mapping and retries, against
a small real HTTP server that answers each request with the next scripted response."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from server.core.config import ModelSettings
from server.core.errors import ApiError
from server.llm.backends.base import (
    ChatMessage,
    Finish,
    GenerationEvent,
    NamedTool,
    SamplingParams,
    TextDelta,
    ToolCall,
    ToolSpec,
)
from server.llm.backends.openai_upstream import OpenAIUpstreamBackend
from server.llm.backends.openai_wire import ChunkParser, request_body

WEATHER = ToolSpec("get_weather", None, {"type": "object", "properties": {"city": {"type": "string"}}})


def _parse(lines: list[str]) -> list[GenerationEvent]:
    parser = ChunkParser()
    events: list[GenerationEvent] = []
    for line in lines:
        delta = parser.line(line)
        if delta is not None:
            events.append(delta)
    return [*events, *parser.finish()]


def _chunk(delta: dict[str, object], finish_reason: str | None = None, **extra: object) -> str:
    return "data: " + json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra})


def test_text_deltas_then_finish_with_the_upstreams_usage() -> None:
    events = _parse([
        _chunk({"role": "assistant", "content": ""}), "", _chunk({"content": "Hel"}), ": keep-alive",
        _chunk({"content": "lo"}), _chunk({}, "length"),
        "data: " + json.dumps({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}}),
        "data: [DONE]",
    ])
    assert events == [TextDelta("Hel"), TextDelta("lo"), Finish("length", 7, 2)]


def test_without_usage_nothing_is_counted() -> None:
    assert _parse([_chunk({"content": "Hi"}, "stop"), "data: [DONE]"]) == [TextDelta("Hi"), Finish("stop", 0, 0)]


def test_tool_call_deltas_are_joined_per_index_openai_style() -> None:
    events = _parse([
        _chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                                "function": {"name": "get_weather", "arguments": ""}}]}),
        _chunk({"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "get_time", "arguments": "{}"}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
        _chunk({}, "tool_calls"), "data: [DONE]",
    ])
    assert events == [ToolCall("call_a", "get_weather", '{"city": "Paris"}'), ToolCall("call_b", "get_time", "{}"),
                      Finish("tool_calls", 0, 0)]


def test_tool_call_deltas_repeating_id_and_name_llama_cpp_style() -> None:
    def piece(arguments: str) -> dict[str, object]:
        function = {"name": "get_weather", "arguments": arguments}
        return {"tool_calls": [{"index": 0, "id": "call_x", "function": function}]}

    events = _parse([_chunk(piece('{"ci')), _chunk(piece('ty": 1}')), _chunk({}, "tool_calls"), "data: [DONE]"])
    assert events == [ToolCall("call_x", "get_weather", '{"city": 1}'), Finish("tool_calls", 0, 0)]


@pytest.mark.parametrize("lines", [
    [_chunk({"content": "Hi"})],  # connection closed mid-answer
    [_chunk({"content": "Hi"}), "data: [DONE]"],  # llama_cpp.server's interrupted stream
])
def test_a_stream_without_finish_reason_is_a_502(lines: list[str]) -> None:
    with pytest.raises(ApiError) as raised:
        _parse(lines)
    assert raised.value.status == 502 and raised.value.code == "upstream_error"


def test_an_error_chunk_mid_stream_is_a_502_with_its_message() -> None:
    with pytest.raises(ApiError) as raised:
        _parse([_chunk({"content": "Hi"}), 'data: {"error": {"message": "out of memory"}}'])
    assert raised.value.status == 502 and "out of memory" in raised.value.message


def test_request_body_maps_messages_and_parameters() -> None:
    call = ToolCall("call_1", "get_weather", '{"city": "Oslo"}')
    messages = [
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "What is this?", images=("https://example.com/a.png",)),
        ChatMessage("assistant", "", tool_calls=(call,)),
        ChatMessage("tool", '{"c": 3}', tool_call_id="call_1"),
    ]
    params = SamplingParams(max_tokens=5, temperature=0.2, stop=("\n",), seed=7, presence_penalty=0.5,
                            json_schema={"type": "object"}, tools=(WEATHER,), tool_choice=NamedTool("get_weather"),
                            parallel_tool_calls=False)
    body = request_body("upstream-name", messages, params, "json_schema")
    assert body["model"] == "upstream-name" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                     {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
        ]},
        {"role": "tool", "content": '{"c": 3}', "tool_call_id": "call_1"},
    ]
    assert (body["max_tokens"], body["temperature"], body["stop"], body["seed"]) == (5, 0.2, ["\n"], 7)
    assert body["presence_penalty"] == 0.5 and "frequency_penalty" not in body
    assert body["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "response", "schema": {"type": "object"}}}
    assert body["tools"] == [{"type": "function", "function": {"name": "get_weather",
                                                               "parameters": WEATHER.parameters}}]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is False
    llama_form = request_body("m", messages[:1], SamplingParams(json_schema={"type": "object"}), "json_object_schema")
    assert llama_form["response_format"] == {"type": "json_object", "schema": {"type": "object"}}
    assert "tools" not in llama_form and "max_tokens" not in llama_form


@dataclass
class ScriptedUpstream:
    """A real HTTP/1.1 server on a free port: each request gets the next (status, body) of `script` (the last one
    repeats) and is recorded: its head in `requests`, its body in `bodies`."""

    script: list[tuple[int, str]]
    requests: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    port: int = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        length = next((int(line.split(":")[1]) for line in head.split("\r\n")
                       if line.lower().startswith("content-length:")), 0)
        self.bodies.append(await reader.readexactly(length))
        self.requests.append(head)
        status, body = self.script[min(len(self.requests) - 1, len(self.script) - 1)]
        if status == 0:  # an upstream that never answers
            await asyncio.sleep(30)
        kind = "text/event-stream" if status == 200 else "application/json"
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\nContent-Length: {len(body.encode())}\r\n"
                     f"Connection: close\r\n\r\n{body}".encode())
        await writer.drain()
        writer.close()


@pytest.fixture
async def upstream() -> AsyncIterator[ScriptedUpstream]:
    scripted = ScriptedUpstream([])
    server = await asyncio.start_server(scripted._serve, "127.0.0.1", 0)
    scripted.port = server.sockets[0].getsockname()[1]
    yield scripted
    server.close()


async def _generate(
    upstream: ScriptedUpstream, script: list[tuple[int, str]], received: list[GenerationEvent] | None = None
) -> list[GenerationEvent]:
    upstream.script = script
    backend = OpenAIUpstreamBackend(ModelSettings(
        id="ours", backend="openai", base_url=f"http://127.0.0.1:{upstream.port}/v1", api_key="sk-upstream",
        upstream_model="theirs", timeout_seconds=0.5,
    ))
    await backend.start()
    events = [] if received is None else received
    try:
        async for event in backend.generate([ChatMessage("user", "Hi")], SamplingParams()):
            events.append(event)
        return events
    finally:
        await backend.close()


ANSWER = "\n\n".join([_chunk({"content": "Hi"}, "stop"), "data: [DONE]", ""])


async def test_bearer_key_and_upstream_model_name_are_sent(upstream: ScriptedUpstream) -> None:
    events = await _generate(upstream, [(200, "{}"), (200, ANSWER)])  # the start probe, then the chat
    assert events == [TextDelta("Hi"), Finish("stop", 0, 0)]
    assert "authorization: Bearer sk-upstream" in upstream.requests[1].replace("Authorization", "authorization")


async def test_503_before_the_first_byte_is_retried(upstream: ScriptedUpstream) -> None:
    events = await _generate(upstream, [(200, "{}"), (503, "{}"), (502, "{}"), (200, ANSWER)])
    assert events[0] == TextDelta("Hi")
    assert len(upstream.requests) == 4


@pytest.mark.parametrize(("status", "ours", "code"), [
    (400, 400, "context_length_exceeded"),
    (404, 404, "model_not_found"),
    (429, 429, "context_length_exceeded"),  # the upstream's own code is kept
    (401, 502, "upstream_error"),
    (500, 502, "upstream_error"),
    (503, 502, "upstream_error"),  # after the retries
])
async def test_upstream_errors_map_to_ours(upstream: ScriptedUpstream, status: int, ours: int, code: str) -> None:
    body = json.dumps({"error": {"message": "too long for me", "code": "context_length_exceeded"}})
    with pytest.raises(ApiError) as raised:
        await _generate(upstream, [(200, "{}"), (status, body)])
    assert (raised.value.status, raised.value.code) == (ours, code)
    if status in (400, 429, 500):
        assert "too long for me" in raised.value.message
    assert "sk-upstream" not in raised.value.message


async def test_a_stream_cut_after_the_first_chunk_fails_after_what_was_sent(upstream: ScriptedUpstream) -> None:
    received: list[GenerationEvent] = []
    with pytest.raises(ApiError) as raised:
        await _generate(upstream, [(200, "{}"), (200, _chunk({"content": "Hi"}) + "\n\n")], received)
    assert received == [TextDelta("Hi")]  # chat.py has sent it: the error becomes an SSE error event
    assert (raised.value.status, raised.value.code) == (502, "upstream_error")
    assert len(upstream.requests) == 2  # never retried once the answer began


async def test_an_upstream_that_does_not_answer_is_a_504(upstream: ScriptedUpstream) -> None:
    with pytest.raises(ApiError) as raised:
        await _generate(upstream, [(200, "{}"), (0, "")])
    assert (raised.value.status, raised.value.code) == (504, "upstream_timeout")


async def test_stored_history_gives_way_to_fit_the_upstreams_context(upstream: ScriptedUpstream) -> None:
    upstream.script = [(200, "{}"), (200, ANSWER)]
    backend = OpenAIUpstreamBackend(ModelSettings(
        id="ours", backend="openai", base_url=f"http://127.0.0.1:{upstream.port}/v1", context_size=512,
    ))
    old = [ChatMessage("user", f"old question {i} " + "x" * 300) for i in range(6)]
    messages = [ChatMessage("system", "Be brief."), *old, ChatMessage("user", "the new question")]
    await backend.start()
    try:
        events = [e async for e in backend.generate(messages, SamplingParams(max_tokens=64), history=range(1, 7))]
    finally:
        await backend.close()
    assert events[0] == TextDelta("Hi")
    sent = json.loads(upstream.bodies[1])["messages"]
    contents = [m["content"] for m in sent]
    # (512 - 64) estimated tokens hold about four 300-character messages: the oldest went, the newest stayed.
    assert contents[0] == "Be brief." and contents[-1] == "the new question"
    assert "old question 0" not in str(contents) and "old question 5" in str(contents)
    assert 2 <= len(sent) - 2 < 6
