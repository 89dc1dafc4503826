"""Tool orchestration of the Responses API on SmolLM2 under the tool grammar, through Envoy with the `openai` SDK:
the server's MCP tools run here (`mcp_call` items with the tool's real output), client function tools come back as
`function_call` items, and the limits end a response as `incomplete`, never as an error.

On llama.cpp models an `auto` turn first routes (a short grammar pass choosing a tool or none), so SmolLM2-135M
calls python_exec for a calculation question; the code it writes is toy-level (e.g. `1234.5678`), so tests assert
that the tool ran and its real output came back, never what the model wrote or said.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.e2e.conftest import MODEL, guest_login
from tests.support.stack import Stack, make_stack

needs_sandbox = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
WEATHER = {"type": "function", "name": "get_weather", "description": "The current weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def python_exec_server(stack: Stack) -> dict[str, Any]:
    return {"type": "mcp", "server_label": "jan", "server_url": f"{stack.base_url}/v1/mcp",
            "allowed_tools": ["python_exec"], "require_approval": "never"}


def forced_python_exec() -> dict[str, str]:
    return {"type": "mcp", "server_label": "jan", "name": "python_exec"}


QUESTION = "What is 1234 * 5678?"


def assert_python_ran(item: Any) -> dict[str, Any] | None:
    """An mcp_call of python_exec that ran in the sandbox: its output is the tool's result payload (returned).

    SmolLM2 sometimes writes empty code (greedy output varies with the instance's cached prefix); the tool refuses
    that, and the call is then `failed` with the tool's error, which is what a user sees too (returns None)."""
    assert item.type == "mcp_call" and item.name == "python_exec" and item.server_label == "jan"
    code = json.loads(item.arguments)["code"]
    assert isinstance(code, str)
    if not code.strip():
        assert item.status == "failed" and "non-empty" in item.error and item.output is None
        return None
    assert item.status == "completed" and item.error is None
    payload: dict[str, Any] = json.loads(item.output)
    assert isinstance(payload["exit_code"], int) and "stdout" in payload and payload["timed_out"] is False
    return payload


@pytest.fixture(scope="module")
def one_step_stack() -> Iterator[Stack]:
    stack = make_stack(responses_max_steps="1")
    stack.start()
    yield stack
    stack.stop()


@needs_sandbox
def test_a_forced_mcp_tool_runs_and_its_output_appears(stack: Stack, client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=MODEL, input=QUESTION,
        tools=[python_exec_server(stack)], tool_choice=forced_python_exec(),  # type: ignore[list-item, arg-type]
        temperature=0, max_output_tokens=100, max_tool_calls=1,
    )
    assert response.status in ("completed", "incomplete") and response.error is None
    assert_python_ran(response.output[0])
    # The next step saw the output: the model answered, or wanted another call (one is allowed) or more tokens.
    if response.status == "completed":
        assert response.output[-1].type == "message"
    else:
        assert response.incomplete_details is not None
        assert response.incomplete_details.reason in ("max_output_tokens", "max_tool_calls")  # type: ignore[comparison-overlap]
    assert client.responses.retrieve(response.id).model_dump() == response.model_dump()


@needs_sandbox
def test_automatic_tool_choice_runs_a_tool_end_to_end(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=MODEL, input=QUESTION, tools=["python_exec"],  # type: ignore[list-item]
        temperature=0, max_output_tokens=100, max_tool_calls=1,
    )
    assert response.tool_choice == "auto" and response.error is None
    # The model chose the tool and the sandbox ran its code; whether 135M-parameter code runs cleanly is its own
    # business (greedy output varies with the instance's cached prefix).
    assert_python_ran(response.output[0])


@needs_sandbox
def test_streamed_tool_calls_have_their_events(stack: Stack, client: openai.OpenAI) -> None:
    events = list(client.responses.create(
        model=MODEL, input=QUESTION, tools=[python_exec_server(stack)],  # type: ignore[list-item]
        tool_choice=forced_python_exec(), temperature=0, max_output_tokens=100, max_tool_calls=1,  # type: ignore[arg-type]
        stream=True,
    ))
    assert [event.sequence_number for event in events] == list(range(len(events)))
    types = [event.type for event in events]
    done = next(e for e in events if e.type == "response.output_item.done" and e.item.type == "mcp_call")
    payload = assert_python_ran(done.item)  # type: ignore[union-attr]
    call_events = [t for t in types if "mcp_call" in t and t != "response.mcp_call_arguments.delta"]
    outcome = "response.mcp_call.completed" if payload is not None else "response.mcp_call.failed"
    assert call_events == ["response.mcp_call_arguments.done", "response.mcp_call.in_progress", outcome]
    assert types.index("response.mcp_call_arguments.delta") < types.index("response.mcp_call_arguments.done")
    final = events[-1].response  # type: ignore[union-attr]
    assert (json.loads(final.output[0].output) if payload is not None else final.output[0].output) == payload


def test_a_client_function_tool_round_trip(client: openai.OpenAI) -> None:
    first = client.responses.create(model=MODEL, input="What's the weather in Paris?", tools=[WEATHER],  # type: ignore[list-item]
                                    tool_choice="required", parallel_tool_calls=False)
    assert first.status == "completed"
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather" and call.status == "completed"
    assert isinstance(json.loads(call.arguments)["city"], str) and call.call_id
    second = client.responses.create(
        model=MODEL, previous_response_id=first.id, tools=[WEATHER], max_output_tokens=12,  # type: ignore[list-item]
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"celsius": 21}'}],
    )
    assert second.status in ("completed", "incomplete") and second.error is None
    assert second.output[-1].type in ("message", "function_call")
    [given] = client.responses.input_items.list(second.id).data
    assert given.type == "function_call_output" and given.call_id == call.call_id  # type: ignore[union-attr]


def test_max_tool_calls_ends_the_response_as_incomplete(stack: Stack, client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=MODEL, input=QUESTION, tools=[python_exec_server(stack)],  # type: ignore[list-item]
        tool_choice=forced_python_exec(), temperature=0, max_tool_calls=0,  # type: ignore[arg-type]
    )
    assert response.status == "incomplete" and response.error is None
    assert response.incomplete_details is not None and response.incomplete_details.reason == "max_tool_calls"  # type: ignore[comparison-overlap]
    [call] = response.output
    assert call.type == "mcp_call" and call.status == "incomplete" and call.output is None


@needs_sandbox
def test_the_step_limit_ends_the_response_as_incomplete(one_step_stack: Stack) -> None:
    token = guest_login(one_step_stack)["access_token"]
    with openai.OpenAI(base_url=f"{one_step_stack.base_url}/v1", api_key=token, max_retries=0) as sdk:
        response = sdk.responses.create(
            model=MODEL, input=QUESTION,
            tools=[python_exec_server(one_step_stack)], tool_choice=forced_python_exec(),  # type: ignore[list-item, arg-type]
            temperature=0,
        )
    assert response.status == "incomplete" and response.error is None
    assert response.incomplete_details is not None and response.incomplete_details.reason == "max_steps"  # type: ignore[comparison-overlap]
    [call] = response.output
    assert_python_ran(call)


def test_without_tools_every_available_mcp_tool_is_offered(client: openai.OpenAI) -> None:
    bare = client.responses.create(model=MODEL, input="Hi", tools=[], max_output_tokens=2)
    offered = client.responses.create(model=MODEL, input="Hi", max_output_tokens=2)
    assert bare.usage and offered.usage
    # The tools are in the prompt (of the routing pass, at least).
    assert offered.usage.input_tokens > bare.usage.input_tokens + 100
