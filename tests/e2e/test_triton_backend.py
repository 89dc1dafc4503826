"""The `triton` backend through Envoy with the openai SDK, against the KServe v2 Triton test server (which answers
"You said: <the last user turn>" word by word, as Triton's vLLM backend would stream it): the chat template and
sampling parameters Triton receives, usage from Triton's counts, a client that leaves cancelling the Triton stream,
readiness following ModelReady, a Triton that is down, and Triton's errors before and during a stream."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest

from tests.e2e.conftest import assert_error_envelope, guest_login
from tests.support.ports import refused_port
from tests.support.stack import Stack, make_stack
from tests.support.triton_test_server import DEFAULT_MODEL, ReceivedRequest, TritonTestServer

MODEL = "qwen2.5"  # our id; Triton's name is DEFAULT_MODEL
WITH_TOOLS = "qwen2.5-tools"  # the same model at Triton, with tools turned on
DOWN = "triton-down"
SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def triton_server() -> Iterator[TritonTestServer]:
    server = TritonTestServer()
    server.start_in_thread()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def triton_stack(triton_server: TritonTestServer) -> Iterator[Stack]:
    """A model on the test server (its chat template from triton_models/), and one whose Triton nobody runs."""
    with refused_port() as port:
        models = [
            {"id": MODEL, "backend": "triton", "triton_url": triton_server.address, "upstream_model": DEFAULT_MODEL,
             "context_size": 8192, "probe_interval_seconds": 0.5},
            {"id": WITH_TOOLS, "backend": "triton", "triton_url": triton_server.address,
             "upstream_model": DEFAULT_MODEL, "tools": True},
            {"id": DOWN, "backend": "triton", "triton_url": f"127.0.0.1:{port}", "upstream_model": DEFAULT_MODEL,
             "connect_timeout_seconds": 1},
        ]
        stack = make_stack(models=json.dumps(models))
        stack.start()
        yield stack
        stack.stop()


@pytest.fixture
def sdk(triton_stack: Stack) -> Iterator[openai.OpenAI]:
    token = guest_login(triton_stack)["access_token"]
    with openai.OpenAI(base_url=f"{triton_stack.base_url}/v1", api_key=token, max_retries=0) as client:
        yield client


@pytest.fixture
def headers(triton_stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {guest_login(triton_stack)['access_token']}"}


def marked(text: str = "") -> str:
    """A user message the test can find again among the requests Triton received."""
    return f"{text} m{secrets.token_hex(4)}".strip()


def received(server: TritonTestServer, marker: str) -> ReceivedRequest:
    matches = [request for request in server.requests if marker in request.text_input]
    assert len(matches) == 1, [request.text_input for request in server.requests]
    return matches[0]


def eventually(check: Callable[[], bool], seconds: float = 5) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_non_stream_chat_is_tritons_answer_with_its_token_counts(
    sdk: openai.OpenAI, triton_server: TritonTestServer
) -> None:
    message = marked("Hello there")
    completion = sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": message}])
    assert completion.id.startswith("chatcmpl-") and completion.object == "chat.completion"
    assert completion.model == MODEL
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason == "stop"
    assert choice.message.content == f"You said: {message}"
    # The usage is what Triton counted: its prompt "tokens" (words, at the test server) and one per streamed word.
    request = received(triton_server, message)
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == len(request.text_input.split())
    assert completion.usage.completion_tokens == len(f"You said: {message}".split())
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_stream_chat_arrives_chunk_by_chunk_with_usage(sdk: openai.OpenAI) -> None:
    message = marked("one two three four five six seven eight nine ten")
    stream = sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": message}], stream=True,
                                         stream_options={"include_usage": True})
    chunks = list(stream)
    assert {chunk.id for chunk in chunks} == {chunks[0].id}
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) > 3  # streamed, not one block
    assert "".join(texts) == f"You said: {message}"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert usage.completion_tokens == len(f"You said: {message}".split()) and usage.prompt_tokens > 0


def test_the_models_chat_template_renders_the_prompt(sdk: openai.OpenAI, triton_server: TritonTestServer) -> None:
    message = marked("What is Triton?")
    sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": message}], max_tokens=2)
    assert received(triton_server, message).text_input == (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{message}<|im_end|>\n<|im_start|>assistant\n"
    )
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": (follow_up := marked("And now?"))},
    ]
    sdk.chat.completions.create(model=MODEL, messages=history, max_tokens=2)
    assert received(triton_server, follow_up).text_input == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!"
        f"<|im_end|>\n<|im_start|>user\n{follow_up}<|im_end|>\n<|im_start|>assistant\n"
    )


def test_sampling_parameters_reach_triton(sdk: openai.OpenAI, triton_server: TritonTestServer) -> None:
    message = marked()
    sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": message}], temperature=0.3, top_p=0.9, max_tokens=7,
        seed=42, stop=["zzz"], presence_penalty=0.5, frequency_penalty=0.25,
    )
    request = received(triton_server, message)
    assert request.sampling == {
        "temperature": 0.3, "top_p": 0.9, "max_tokens": 7, "seed": 42, "presence_penalty": 0.5,
        "frequency_penalty": 0.25, "stop": ["zzz", "<|im_end|>"],  # the template's end of turn stops it too
    }
    assert request.flags == {
        "stream": True, "exclude_input_in_output": True, "return_finish_reason": True,
        "return_num_input_tokens": True, "return_num_output_tokens": True,
    }
    # Without max_tokens vLLM would stop at 16 tokens: the model's context size is asked for instead.
    default = marked()
    sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": default}])
    assert received(triton_server, default).sampling["max_tokens"] == 8192


def test_max_tokens_and_stop_end_the_answer(sdk: openai.OpenAI) -> None:
    message = marked("alpha beta gamma delta epsilon")
    short = sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": message}], max_tokens=3)
    assert short.choices[0].finish_reason == "length"
    assert short.choices[0].message.content == "You said: alpha"
    assert short.usage is not None and short.usage.completion_tokens == 3
    stopped = sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": message}],
                                          stop=["gamma"], stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stopped if c.choices)
    assert text == "You said: alpha beta "


def test_a_client_leaving_mid_stream_cancels_the_triton_stream(
    sdk: openai.OpenAI, triton_server: TritonTestServer
) -> None:
    message = marked("[long] [slow]")
    stream = sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": message}],
                                         max_tokens=2000, stream=True)
    next(iter(stream))
    stream.close()
    request = received(triton_server, message)
    assert eventually(lambda: request.request_id in triton_server.cancelled)


def test_a_model_not_ready_at_triton_is_503_until_it_is(
    triton_stack: Stack, headers: dict[str, str], triton_server: TritonTestServer
) -> None:
    triton_server.models[DEFAULT_MODEL] = False
    try:
        response = httpx.post(f"{triton_stack.base_url}/v1/chat/completions", headers=headers, timeout=30,
                              json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]})
        error = assert_error_envelope(response, 503, type="internal_error", code="model_unavailable")
        assert MODEL in str(error["message"])
        assert eventually(lambda: MODEL in _not_ready(triton_stack))
    finally:
        triton_server.models[DEFAULT_MODEL] = True
    # Ready again: requests work at once, and the next probe clears our readiness.
    response = httpx.post(f"{triton_stack.base_url}/v1/chat/completions", headers=headers, timeout=30,
                          json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]})
    assert response.status_code == 200, response.text
    assert eventually(lambda: MODEL not in _not_ready(triton_stack))


def _not_ready(stack: Stack) -> set[str]:
    """The models /readyz names as not ready (this stack's DOWN model keeps the server unready)."""
    response = httpx.get(f"{stack.base_url}/readyz")
    assert response.status_code == 503, response.text
    message = str(response.json()["error"]["message"])
    return set(message.removeprefix("models not ready: ").split(", "))


def test_a_triton_that_is_down_is_503_and_named_by_readiness(triton_stack: Stack, headers: dict[str, str]) -> None:
    started = time.monotonic()
    response = httpx.post(f"{triton_stack.base_url}/v1/chat/completions", headers=headers, timeout=30,
                          json={"model": DOWN, "messages": [{"role": "user", "content": "Hi"}], "stream": True})
    assert time.monotonic() - started < 5
    error = assert_error_envelope(response, 503, type="internal_error", code="model_unavailable")
    assert DOWN in str(error["message"])
    assert DOWN in _not_ready(triton_stack)


def test_a_triton_error_mid_stream_is_an_sse_error_event(triton_stack: Stack, headers: dict[str, str]) -> None:
    content = "one two three four five six seven eight [fail after 8]"
    with httpx.stream("POST", f"{triton_stack.base_url}/v1/chat/completions", headers=headers, timeout=30,
                      json={"model": MODEL, "messages": [{"role": "user", "content": content}],
                            "stream": True}) as response:
        assert response.status_code == 200
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    chunks = [json.loads(event) for event in events]
    assert chunks[0]["choices"][0]["delta"]["content"]  # the answer had begun
    error = chunks[-1]["error"]
    assert error["code"] == "upstream_error" and "simulated failure" in error["message"]
    assert "[DONE]" not in events


def test_a_triton_error_before_the_answer_is_a_502(triton_stack: Stack, headers: dict[str, str]) -> None:
    response = httpx.post(f"{triton_stack.base_url}/v1/chat/completions", headers=headers, timeout=30,
                          json={"model": MODEL, "messages": [{"role": "user", "content": "[fail after 0]"}]})
    error = assert_error_envelope(response, 502, type="internal_error", code="upstream_error")
    assert "simulated failure" in str(error["message"])


def test_tools_and_json_modes_are_refused_cleanly(triton_stack: Stack, headers: dict[str, str]) -> None:
    url = f"{triton_stack.base_url}/v1/chat/completions"
    question = [{"role": "user", "content": "Weather?"}]
    response = httpx.post(url, headers=headers, timeout=30,
                          json={"model": MODEL, "messages": question, "tools": [WEATHER_TOOL]})
    assert_error_envelope(response, 400, type="invalid_request_error", code="model_does_not_support_tools")
    forced = {"type": "function", "function": {"name": "get_weather"}}
    for choice in ("required", forced):
        response = httpx.post(url, headers=headers, timeout=30, json={
            "model": WITH_TOOLS, "messages": question, "tools": [WEATHER_TOOL], "tool_choice": choice})
        assert_error_envelope(response, 400, type="invalid_request_error", param="tool_choice")
    response = httpx.post(url, headers=headers, timeout=30, json={
        "model": MODEL, "messages": question, "response_format": {"type": "json_object"}})
    assert_error_envelope(response, 400, type="invalid_request_error", param="response_format")


def test_a_tool_call_in_the_models_markup_is_a_tool_call(sdk: openai.OpenAI, triton_server: TritonTestServer) -> None:
    messages = [{"role": "user", "content": (ask := marked("Weather in Paris? [call get_weather]"))}]
    completion = sdk.chat.completions.create(model=WITH_TOOLS, messages=messages,
                                             tools=[WEATHER_TOOL])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and not choice.message.content
    assert choice.message.tool_calls and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    # Qwen2.5's template described the tool to the model itself.
    prompt = received(triton_server, ask).text_input
    assert prompt.startswith(f"<|im_start|>system\n{SYSTEM}\n\n# Tools\n")
    assert json.dumps(WEATHER_TOOL) in prompt

    stream = sdk.chat.completions.create(model=WITH_TOOLS, messages=messages, tools=[WEATHER_TOOL],
                                         stream=True)
    chunks = [c for c in stream if c.choices]
    streamed = [part for c in chunks for part in c.choices[0].delta.tool_calls or []]
    assert streamed[0].function and streamed[0].function.name == "get_weather"
    assert not any(c.choices[0].delta.content for c in chunks)  # the markup never reaches the client
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    # The call and its result go back to Triton in the template's form.
    follow_up = sdk.chat.completions.create(model=WITH_TOOLS, tools=[WEATHER_TOOL], messages=[
        *messages, choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": (result := marked('{"temperature_c": 21}'))},
    ])
    assert follow_up.choices[0].finish_reason == "stop" and follow_up.choices[0].message.content
    assert received(triton_server, result).text_input.endswith(
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
        f"<|im_end|>\n<|im_start|>user\n<tool_response>\n{result}\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_with_tools_offered_a_plain_answer_streams_as_text(sdk: openai.OpenAI) -> None:
    message = marked("Just say hello")
    stream = sdk.chat.completions.create(model=WITH_TOOLS, messages=[{"role": "user", "content": message}],
                                         tools=[WEATHER_TOOL], stream=True)
    chunks = [c for c in stream if c.choices]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == f"You said: {message}"
    assert chunks[-1].choices[0].finish_reason == "stop"
