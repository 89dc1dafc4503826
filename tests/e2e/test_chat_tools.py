"""OpenAI tool calling in /v1/chat/completions through Envoy, with the official `openai` SDK and raw HTTP, on SmolLM2
under the tool grammar. Asserts shapes (well-formed, schema-valid calls), never the values the small model picks."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai

from tests.e2e.conftest import MODEL, assert_error_envelope
from tests.support.conversations import create_conversation, list_page

WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30},
                           "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}
QUESTION: Any = [{"role": "user", "content": "What's the weather like in Paris?"}]
FORCED: Any = {"type": "function", "function": {"name": "get_weather"}}


def _assert_weather_call(name: str, arguments: str) -> None:
    assert name == "get_weather"
    parsed = json.loads(arguments)
    assert set(parsed) == {"city", "unit"} and parsed["unit"] in ("celsius", "fahrenheit")


def test_forced_call_then_second_turn_with_the_result(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model=MODEL, messages=QUESTION, tools=[WEATHER], tool_choice=FORCED, max_tokens=80, temperature=0
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.id.startswith("call_") and call.type == "function"
    _assert_weather_call(call.function.name, call.function.arguments)

    second = client.chat.completions.create(
        model=MODEL,
        messages=[*QUESTION, choice.message.model_dump(exclude_none=True),  # type: ignore[list-item]
                  {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 18, "sky": "sunny"}'}],
        tools=[WEATHER], max_tokens=30, temperature=0,
    )
    answer = second.choices[0]
    assert answer.message.content and not answer.message.tool_calls
    assert "<tool_call>" not in answer.message.content
    # The call and its result are in the prompt (the answering turn no longer describes the tools).
    plain = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=1)
    assert second.usage is not None and plain.usage is not None
    assert second.usage.prompt_tokens > plain.usage.prompt_tokens + 20


def test_streamed_call_arrives_as_tool_call_deltas(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=QUESTION, tools=[WEATHER], tool_choice="required", parallel_tool_calls=False,
        max_tokens=80, temperature=0, stream=True,
    ))
    deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
    assert deltas[0].role == "assistant" and deltas[0].content is None
    head = (deltas[0].tool_calls or [])[0]
    assert head.index == 0 and head.id and head.type == "function" and head.function is not None
    arguments = "".join(
        call.function.arguments or "" for delta in deltas for call in delta.tool_calls or [] if call.function
    )
    _assert_weather_call(head.function.name or "", arguments)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    with client.chat.completions.stream(
        model=MODEL, messages=QUESTION, tools=[WEATHER], tool_choice="required", max_tokens=120, temperature=0
    ) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert final.choices[0].finish_reason == "tool_calls" and calls
    for call in calls:
        _assert_weather_call(call.function.name, call.function.arguments)


def test_auto_choice_may_answer_in_text_without_markup(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello."}], tools=[WEATHER], max_tokens=20,
        temperature=0,
    )
    message = reply.choices[0].message
    if message.tool_calls:  # the model may call; then the call is well-formed
        _assert_weather_call(message.tool_calls[0].function.name, message.tool_calls[0].function.arguments)
    else:
        assert message.content and "<tool_call>" not in message.content
        assert reply.choices[0].finish_reason in ("stop", "length")


def test_bad_tools_are_400s_naming_the_field(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    def post(**fields: Any) -> httpx.Response:
        body = {"model": MODEL, "messages": QUESTION, "max_tokens": 5, **fields}
        return http.post("/v1/chat/completions", headers=auth_headers, json=body)

    bad_name = {"type": "function", "function": {**WEATHER["function"], "name": "get weather"}}
    assert_error_envelope(post(tools=[bad_name]), 400, type="invalid_request_error", param="tools[0].function.name")
    bad_schema = {"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}
    assert_error_envelope(post(tools=[WEATHER, bad_schema]), 400, type="invalid_request_error",
                          param="tools[1].function.parameters")
    other = {"type": "function", "function": {"name": "get_time"}}
    assert_error_envelope(post(tools=[WEATHER], tool_choice=other), 400, type="invalid_request_error",
                          param="tool_choice")
    unexpressible = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": "no-such-type"}}}}}
    assert_error_envelope(post(tools=[unexpressible], tool_choice="required"), 400, type="invalid_request_error",
                          param="tools[0].function.parameters")


def test_stored_completion_keeps_tool_calls(client: openai.OpenAI) -> None:
    messages: Any = [*QUESTION, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Lyon"}'}}]},
        {"role": "tool", "tool_call_id": "call_0", "content": "12C"}, {"role": "user", "content": "And in Paris?"}]
    created = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER], tool_choice=FORCED, max_tokens=80, temperature=0, store=True
    )
    stored = client.chat.completions.retrieve(created.id)
    assert stored.choices[0].message.tool_calls == created.choices[0].message.tool_calls
    assert stored.choices[0].finish_reason == "tool_calls"
    listed = client.chat.completions.messages.list(created.id).data
    assert listed[1].role == "assistant" and listed[2].role == "tool"  # type: ignore[comparison-overlap]
    assert listed[1].model_dump()["tool_calls"][0]["function"]["arguments"] == '{"city": "Lyon"}'


def test_conversation_keeps_calls_and_results_as_items(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    conversation = create_conversation(http, auth_headers, {"items": [
        {"type": "message", "role": "user", "content": "What's the weather like in Paris?"},
        {"type": "function_call", "call_id": "call_a", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"type": "function_call_output", "call_id": "call_a", "output": '{"temperature": 18}'},
    ]})
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Thanks. And in Oslo?"}], "tools": [WEATHER],
            "tool_choice": FORCED, "max_tokens": 80, "temperature": 0}
    plain = http.post("/v1/chat/completions", headers=auth_headers, json=body).json()
    reply = http.post("/v1/chat/completions", headers=auth_headers, json={**body, "conversation": conversation["id"]})
    assert reply.status_code == 200, reply.text
    completion = reply.json()
    # The stored question, call and output were in the prompt.
    assert completion["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"] + 30
    (call,) = completion["choices"][0]["message"]["tool_calls"]
    items = list_page(http, auth_headers, f"/v1/conversations/{conversation['id']}/items", order="asc")["data"]
    assert [item["type"] for item in items[3:]] == ["message", "function_call"]
    assert (items[4]["call_id"], items[4]["name"], items[4]["arguments"]) == (
        call["id"], "get_weather", call["function"]["arguments"])
