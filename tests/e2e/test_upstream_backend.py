"""The `openai` backend against a real third-party OpenAI-compatible server (`python -m llama_cpp.server` on the
bundled GGUF), through Envoy with the openai SDK: our ids and envelope around the upstream's answer, its sampling
limits, forced tool calls and JSON schemas passed through, a down upstream, and a client that leaves mid-stream."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from server.core.config import bundled_smollm2_path
from tests.e2e.conftest import MODEL, assert_error_envelope, guest_login
from tests.support.llama_server import LlamaServer, start_llama_server
from tests.support.ports import refused_port
from tests.support.stack import Stack, make_stack

UPSTREAM = "upstream-smollm2"
DOWN = "upstream-down"
QUESTION = [{"role": "user", "content": "Explain in two sentences what an API gateway does."}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def llama_server() -> Iterator[LlamaServer]:
    server = start_llama_server(threads=1)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def upstream_stack(llama_server: LlamaServer) -> Iterator[Stack]:
    """The bundled model in-process, the same GGUF behind llama_cpp.server, and an upstream nobody listens on."""
    with refused_port() as port:
        yield from _upstream_stack(llama_server, port)


def _upstream_stack(llama_server: LlamaServer, port: int) -> Iterator[Stack]:
    models = [
        {"id": MODEL, "path": bundled_smollm2_path(), "pool_size": 1, "threads": 1},
        # llama_cpp.server enforces only its own form of a JSON-schema response_format.
        {"id": UPSTREAM, "backend": "openai", "base_url": llama_server.base_url, "api_key": "upstream-secret",
         "json_schema_format": "json_object_schema"},
        {"id": DOWN, "backend": "openai", "base_url": f"http://127.0.0.1:{port}/v1",
         "connect_timeout_seconds": 1},
    ]
    stack = make_stack(models=json.dumps(models))
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
def sdk(upstream_stack: Stack) -> Iterator[openai.OpenAI]:
    token = guest_login(upstream_stack)["access_token"]
    with openai.OpenAI(base_url=f"{upstream_stack.base_url}/v1", api_key=token, max_retries=0) as client:
        yield client


def test_non_stream_chat_is_our_completion_around_the_upstreams_answer(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(model=UPSTREAM, messages=QUESTION, max_tokens=24, temperature=0)
    assert completion.id.startswith("chatcmpl-") and len(completion.id) == len("chatcmpl-") + 24
    assert completion.object == "chat.completion"
    assert completion.model == UPSTREAM
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    # llama_cpp.server sends no usage while streaming: the backend counts nothing rather than guess.
    assert completion.usage is not None
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_stream_chat_arrives_chunk_by_chunk_with_our_ids(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model=UPSTREAM, messages=QUESTION, max_tokens=24, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert {chunk.id for chunk in chunks} == {chunks[0].id} and chunks[0].id.startswith("chatcmpl-")
    assert all(chunk.object == "chat.completion.chunk" and chunk.model == UPSTREAM for chunk in chunks)
    texts = [chunk.choices[0].delta.content for chunk in chunks if chunk.choices and chunk.choices[0].delta.content]
    assert len(texts) > 1  # streamed, not one block
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] in (
        ["stop"], ["length"])
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


def test_the_same_request_answers_the_same_through_the_stream_and_without(sdk: openai.OpenAI) -> None:
    whole = sdk.chat.completions.create(model=UPSTREAM, messages=QUESTION, max_tokens=16, temperature=0)
    stream = sdk.chat.completions.create(model=UPSTREAM, messages=QUESTION, max_tokens=16, temperature=0,
                                         stream=True)
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == whole.choices[0].message.content


def test_max_tokens_and_stop_are_honoured(sdk: openai.OpenAI) -> None:
    short = sdk.chat.completions.create(model=UPSTREAM, messages=QUESTION, max_tokens=3, temperature=0)
    assert short.choices[0].finish_reason == "length"
    longer = sdk.chat.completions.create(model=UPSTREAM, messages=QUESTION, max_tokens=24, temperature=0)
    answer = longer.choices[0].message.content or ""
    assert len(answer) > len(short.choices[0].message.content or "")
    words = answer.split()
    assert len(words) >= 4
    stop = words[3]
    stopped = sdk.chat.completions.create(model=UPSTREAM, messages=QUESTION, max_tokens=24, temperature=0,
                                          stop=[stop])
    assert stopped.choices[0].finish_reason == "stop"
    content = stopped.choices[0].message.content or ""
    assert stop not in content and answer.startswith(content)


def test_a_forced_tool_call_passes_through(sdk: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    forced = {"type": "function", "function": {"name": "get_weather"}}
    completion = sdk.chat.completions.create(model=UPSTREAM, messages=messages, tools=[WEATHER_TOOL],
                                             tool_choice=forced, max_tokens=40, temperature=0)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id and call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments), dict)

    stream = sdk.chat.completions.create(model=UPSTREAM, messages=messages, tools=[WEATHER_TOOL],
                                         tool_choice=forced, max_tokens=40, temperature=0, stream=True)
    deltas = [c.choices[0].delta for c in stream if c.choices]
    streamed = [tool_call for delta in deltas for tool_call in delta.tool_calls or []]
    assert streamed[0].id and streamed[0].function and streamed[0].function.name == "get_weather"
    arguments = "".join(part.function.arguments or "" for part in streamed if part.function)
    assert isinstance(json.loads(arguments), dict)

    # The call and its result go back upstream as history.
    follow_up = sdk.chat.completions.create(
        model=UPSTREAM, max_tokens=16, temperature=0,
        messages=[*messages, choice.message.model_dump(exclude_none=True),
                  {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 21}'}],
    )
    assert follow_up.choices[0].message.content


def test_a_json_schema_response_format_is_enforced_upstream(sdk: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"]}
    completion = sdk.chat.completions.create(
        model=UPSTREAM, messages=[{"role": "user", "content": "Describe a person as JSON."}], max_tokens=60,
        temperature=0, response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
    )
    person = json.loads(completion.choices[0].message.content or "")
    assert isinstance(person["name"], str) and isinstance(person["age"], int)


def test_a_down_upstream_is_503_and_the_server_stays_ready(upstream_stack: Stack, sdk: openai.OpenAI) -> None:
    token = guest_login(upstream_stack)["access_token"]
    started = time.monotonic()
    response = httpx.post(f"{upstream_stack.base_url}/v1/chat/completions", timeout=30,
                          headers={"Authorization": f"Bearer {token}"},
                          json={"model": DOWN, "messages": QUESTION, "stream": True})
    assert time.monotonic() - started < 5  # a couple of quick retries, not a hang
    error = assert_error_envelope(response, 503, type="internal_error", code="model_unavailable")
    assert DOWN in str(error["message"])
    assert httpx.get(f"{upstream_stack.base_url}/readyz").status_code == 200
    assert sdk.chat.completions.create(model=UPSTREAM, messages=QUESTION, max_tokens=2).choices[0].message.content


def test_a_client_leaving_mid_stream_stops_the_upstream(sdk: openai.OpenAI) -> None:
    story = [{"role": "user", "content": "Write a very long story about a dragon who learns to cook."}]
    # llama_cpp.server generates one request at a time: if it kept writing the story, the next request would wait.
    stream = sdk.chat.completions.create(model=UPSTREAM, messages=story, max_tokens=1500, temperature=0,
                                         stream=True)
    next(iter(stream))
    stream.close()
    started = time.monotonic()
    answer = sdk.chat.completions.create(model=UPSTREAM, messages=QUESTION, max_tokens=4, temperature=0)
    assert answer.choices[0].message.content
    assert time.monotonic() - started < 2
