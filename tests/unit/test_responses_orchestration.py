"""The responses service on a real database (SQLite and PostgreSQL) with scripted stand-ins for the two gRPC
clients: the loop's stopping rules, tool failures and parallelism, the events it emits, cancel, history and the
recovery of responses a dead process left behind. The real clients run end to end in tests/e2e/test_responses*.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.auth.store import User
from server.core.db import utcnow
from server.core.errors import ApiError
from server.core.rpc_client import CallerMetadata
from server.responses import store
from server.responses.llm_client import ChatEvent, StepEnd, TextDelta, ToolCallDelta
from server.responses.mcp_client import McpTool, ToolResult
from server.responses.service import ResponseService

PUBLIC_URL = "http://127.0.0.1:8000"
SCHEMA = {"type": "object", "properties": {"code": {"type": "string"}}}
USAGE = {"prompt_tokens": 10, "completion_tokens": 3}


def call(name: str, arguments: dict[str, Any], index: int = 0) -> list[ChatEvent]:
    return [ToolCallDelta(index, f"call_{name}_{index}", name, ""), ToolCallDelta(index, None, None,
                                                                                  json.dumps(arguments))]


def answer(text: str) -> list[ChatEvent]:
    return [TextDelta(text[:2]), TextDelta(text[2:]), StepEnd("stop", USAGE)]


def calls(*events: list[ChatEvent]) -> list[ChatEvent]:
    return [event for group in events for event in group] + [StepEnd("tool_calls", USAGE)]


class ScriptedLlm:
    """Answers step i with script[i] (the last one repeats); `hang` makes a step wait until cancelled."""

    def __init__(self, *script: list[ChatEvent], hang: bool = False) -> None:
        self.script = list(script)
        self.bodies: list[dict[str, Any]] = []
        self.hang = hang
        self.cancelled = asyncio.Event()
        self.called = asyncio.Event()

    async def check_model(self, model: str, caller: CallerMetadata) -> None:
        if model != "m":
            raise ApiError(404, "no such model", code="model_not_found", param="model")

    async def stream_chat(self, body: dict[str, Any], caller: CallerMetadata) -> AsyncIterator[ChatEvent]:
        self.bodies.append(json.loads(json.dumps(body)))
        self.called.set()
        try:
            if self.hang:
                yield TextDelta("…")
                await asyncio.Event().wait()
            for event in self.script[min(len(self.bodies), len(self.script)) - 1]:
                yield event
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


class FakeMcp:
    """python_exec answers after `delay`; `broken` always fails."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def list_tools(self, caller: CallerMetadata) -> list[McpTool]:
        return [McpTool("python_exec", "Runs Python.", SCHEMA, True), McpTool("broken", "Fails.", SCHEMA, True),
                McpTool("google_search", "Searches.", SCHEMA, False)]

    async def call_tool(self, name: str, arguments: dict[str, Any], caller: CallerMetadata) -> ToolResult:
        self.calls.append((name, arguments))
        await asyncio.sleep(self.delay)
        if name == "broken":
            return ToolResult("Tool 'broken' timed out after 45 s", True)
        return ToolResult(json.dumps({"stdout": "42\n"}), False)


async def make_user(sessions: async_sessionmaker[AsyncSession]) -> CallerMetadata:
    async with sessions.begin() as session:
        user = User(username="responses", is_guest=True)
        session.add(user)
    return CallerMetadata(user.id, "jwt", "req_test")


def service(sessions: async_sessionmaker[AsyncSession], llm: ScriptedLlm, mcp: FakeMcp | None = None,
            max_steps: int = 8) -> ResponseService:
    return ResponseService(sessions, llm, mcp or FakeMcp(), public_url=PUBLIC_URL,  # type: ignore[arg-type]
                           max_steps=max_steps, history_items=100)


def body(**fields: Any) -> bytes:
    return json.dumps({"model": "m", "input": "Compute", **fields}).encode()


async def create(svc: ResponseService, caller: CallerMetadata, **fields: Any) -> dict[str, Any]:
    created = await svc.create(caller, body(**fields))
    assert created.response is not None
    return created.response


async def test_mcp_calls_run_and_the_model_answers(sessions: async_sessionmaker[AsyncSession]) -> None:
    caller = await make_user(sessions)
    llm = ScriptedLlm(calls(call("python_exec", {"code": "print(6*7)"})), answer("It is 42"))
    mcp = FakeMcp()
    response = await create(service(sessions, llm, mcp), caller, tools=["python_exec"])
    assert response["status"] == "completed" and response["output_text"] == "It is 42"
    mcp_call, message = response["output"]
    assert (mcp_call["type"], mcp_call["status"]) == ("mcp_call", "completed")
    assert mcp_call["output"] == '{"stdout": "42\\n"}'
    assert message["type"] == "message" and message["content"][0]["text"] == "It is 42"
    assert mcp.calls == [("python_exec", {"code": "print(6*7)"})]
    assert response["usage"]["input_tokens"] == 20 and response["usage"]["output_tokens"] == 6
    # The second step saw the call and its output.
    second = llm.bodies[1]["messages"]
    assert second[-2]["tool_calls"][0]["function"]["name"] == "python_exec"
    assert second[-1] == {"role": "tool", "tool_call_id": mcp_call["id"], "content": '{"stdout": "42\\n"}'}


async def test_no_tools_means_every_available_mcp_tool(sessions: async_sessionmaker[AsyncSession]) -> None:
    caller = await make_user(sessions)
    llm = ScriptedLlm(answer("hi"))
    await create(service(sessions, llm), caller)
    assert [tool["function"]["name"] for tool in llm.bodies[0]["tools"]] == ["python_exec", "broken"]
    await create(service(sessions, llm), caller, tools=[])
    assert "tools" not in llm.bodies[1]


async def test_a_failing_tool_is_an_output_not_a_failure(sessions: async_sessionmaker[AsyncSession]) -> None:
    caller = await make_user(sessions)
    llm = ScriptedLlm(calls(call("broken", {"code": "x"})), answer("sorry"))
    response = await create(service(sessions, llm), caller, tools=["broken"])
    assert response["status"] == "completed"
    assert response["output"][0]["status"] == "failed" and "timed out" in response["output"][0]["error"]
    assert "timed out" in llm.bodies[1]["messages"][-1]["content"]


async def test_parallel_calls_run_at_once(sessions: async_sessionmaker[AsyncSession]) -> None:
    caller = await make_user(sessions)
    two = calls(call("python_exec", {"code": "1"}, 0), call("python_exec", {"code": "2"}, 1))
    for parallel, low, high in ((True, 0.2, 0.35), (False, 0.4, 1.0)):
        llm = ScriptedLlm(two, answer("done"))
        started = time.monotonic()
        response = await create(service(sessions, llm, FakeMcp(delay=0.2)), caller, tools=["python_exec"],
                                parallel_tool_calls=parallel)
        assert low <= time.monotonic() - started < high
        assert [item["type"] for item in response["output"]] == ["mcp_call", "mcp_call", "message"]
        assert len(llm.bodies[1]["messages"][-3]["tool_calls"]) == 2


async def test_the_step_limit_and_max_tool_calls_end_as_incomplete(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    caller = await make_user(sessions)
    forever = ScriptedLlm(calls(call("python_exec", {"code": "1"})))
    response = await create(service(sessions, forever, max_steps=3), caller, tools=["python_exec"])
    assert response["status"] == "incomplete" and response["incomplete_details"] == {"reason": "max_steps"}
    assert len(forever.bodies) == 3 and len(response["output"]) == 3
    limited = ScriptedLlm(calls(call("python_exec", {"code": "1"})))
    response = await create(service(sessions, limited), caller, tools=["python_exec"], max_tool_calls=2)
    assert response["incomplete_details"] == {"reason": "max_tool_calls"}
    assert [item["status"] for item in response["output"]] == ["completed", "completed", "incomplete"]


async def test_required_forces_only_the_first_step(sessions: async_sessionmaker[AsyncSession]) -> None:
    caller = await make_user(sessions)
    llm = ScriptedLlm(calls(call("python_exec", {"code": "1"})), answer("ok"))
    await create(service(sessions, llm), caller, tools=["python_exec"], tool_choice="required")
    assert [b["tool_choice"] for b in llm.bodies] == ["required", "auto"]
    named = ScriptedLlm(calls(call("python_exec", {"code": "1"})), answer("ok"))
    await create(service(sessions, named), caller, tools=["python_exec"],
                 tool_choice={"type": "function", "name": "python_exec"})
    assert named.bodies[0]["tool_choice"] == {"type": "function", "function": {"name": "python_exec"}}


async def test_client_function_calls_end_the_response_and_continue_it(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    caller = await make_user(sessions)
    weather = {"type": "function", "name": "weather", "parameters": {"type": "object", "properties": {}}}
    llm = ScriptedLlm(calls(call("weather", {"city": "Paris"})), answer("Sunny"))
    svc = service(sessions, llm)
    first = await create(svc, caller, tools=[weather])
    assert first["status"] == "completed" and len(llm.bodies) == 1
    [fc] = first["output"]
    assert (fc["type"], fc["call_id"], fc["status"]) == ("function_call", "call_weather_0", "completed")
    second = await create(svc, caller, tools=[weather], previous_response_id=first["id"],
                          input=[{"type": "function_call_output", "call_id": fc["call_id"], "output": "sunny"}])
    assert second["output_text"] == "Sunny"
    messages = llm.bodies[1]["messages"]
    assert messages[0] == {"role": "user", "content": "Compute"}
    assert messages[1]["tool_calls"][0]["id"] == "call_weather_0"
    assert messages[2] == {"role": "tool", "tool_call_id": "call_weather_0", "content": "sunny"}


async def test_streamed_events_of_a_tool_step(sessions: async_sessionmaker[AsyncSession]) -> None:
    caller = await make_user(sessions)
    llm = ScriptedLlm(calls(call("python_exec", {"code": "1"})), answer("done"))
    created = await service(sessions, llm).create(caller, body(tools=["python_exec"], stream=True))
    assert created.events is not None
    events = [json.loads(chunk.split(b"data: ", 1)[1]) async for chunk in created.events]
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert [event["type"] for event in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.mcp_call_arguments.delta", "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress", "response.mcp_call.completed", "response.output_item.done",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed",
    ]
    assert events[2]["item"]["arguments"] == "" and events[7]["item"]["output"] == '{"stdout": "42\\n"}'
    assert events[8]["item"]["content"] == [] and events[8]["output_index"] == 1


async def test_cancel_stops_the_model_call(sessions: async_sessionmaker[AsyncSession]) -> None:
    caller = await make_user(sessions)
    llm = ScriptedLlm(hang=True)
    svc = service(sessions, llm)
    queued = await create(svc, caller, tools=[], background=True)
    assert queued["status"] == "queued"
    await asyncio.wait_for(llm.called.wait(), 5)
    await asyncio.sleep(0.05)
    live = await svc.get(caller.user_id, queued["id"])  # what it has written so far
    assert live["status"] == "in_progress" and live["output"][0]["content"][0]["text"] == "…"
    cancelled = await svc.cancel(caller.user_id, queued["id"])
    assert cancelled["status"] == "cancelled" and llm.cancelled.is_set()
    assert cancelled["output"][0]["status"] == "incomplete"
    assert not svc.running.is_running(queued["id"])


async def test_a_client_leaving_cancels_a_foreground_response(sessions: async_sessionmaker[AsyncSession]) -> None:
    caller = await make_user(sessions)
    llm = ScriptedLlm(hang=True)
    svc = service(sessions, llm)
    waiting = asyncio.create_task(svc.create(caller, body(tools=[])))
    await asyncio.wait_for(llm.called.wait(), 5)
    waiting.cancel()
    await asyncio.wait_for(llm.cancelled.wait(), 5)
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0.2)
    assert len(svc.running) == 0


async def test_a_failed_model_call_is_the_http_error_and_is_stored(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    caller = await make_user(sessions)

    class Overloaded(ScriptedLlm):
        async def stream_chat(self, body: dict[str, Any], caller: CallerMetadata) -> AsyncIterator[ChatEvent]:
            self.bodies.append(body)
            raise ApiError(429, "queue full", code="rate_limit_exceeded")
            yield TextDelta("")  # unreachable: makes this an async generator

    svc = service(sessions, Overloaded())
    with pytest.raises(ApiError) as raised:
        await svc.create(caller, body(tools=[]))
    assert raised.value.status == 429
    with pytest.raises(ApiError, match="no such model"):
        await svc.create(caller, body(model="x"))


async def test_responses_left_running_by_a_dead_process_are_marked_failed(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    caller = await make_user(sessions)
    async with sessions.begin() as session:
        for status in ("queued", "in_progress", "completed"):
            row = store.StoredResponse(id=f"resp_{status.replace('_', '')}", user_id=caller.user_id, model="m",
                                       status=status, settings={}, created_at=utcnow() - timedelta(seconds=5))
            await store.add_response(session, row, [])
    svc = service(sessions, ScriptedLlm())
    await svc.recover(utcnow())
    statuses = {rid: (await svc.get(caller.user_id, rid)) for rid in ("resp_queued", "resp_inprogress",
                                                                        "resp_completed")}
    assert statuses["resp_queued"]["status"] == statuses["resp_inprogress"]["status"] == "failed"
    assert statuses["resp_queued"]["error"]["code"] == "server_restarted"
    assert statuses["resp_completed"]["status"] == "completed"
