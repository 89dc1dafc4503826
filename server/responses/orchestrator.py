"""The loop: ask the model, run the MCP tools it calls, feed their outputs back, until it answers.

Each step is one streamed chat completion with the offered tools. Text becomes a `message` item; a call of an MCP
tool becomes an `mcp_call` item run here (in parallel when allowed; a failure or timeout is the tool's output);
a call of a client function tool becomes a `function_call` item that ends the response, for the caller to run.
The loop stops with a final message (`completed`) or `incomplete`: `max_steps` (model turns used up),
`max_tool_calls` (the model asked for more tool calls than allowed) or `max_output_tokens`.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from server.core.ids import new_id
from server.core.rpc_client import CallerMetadata
from server.responses.events import EventStream
from server.responses.items import (
    Item,
    arguments_object,
    chat_messages,
    function_call_item,
    mcp_call_item,
    message_item,
    output_text_part,
)
from server.responses.llm_client import LlmClient, StepEnd, TextDelta, ToolCallDelta
from server.responses.mcp_client import McpClient, ToolResult
from server.responses.request import ResponseRequest
from server.responses.state import ResponseState


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered to the model: an MCP tool of this server (`server_label` set) or a client function."""

    name: str
    description: str | None
    parameters: dict[str, Any]
    server_label: str | None = None

    def chat_tool(self) -> dict[str, Any]:
        function: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}


@dataclass
class StepTiming:
    """Where one step's wall time went: waiting for the model, running tools, and the rest (orchestration)."""

    wall: float = 0.0
    model: float = 0.0
    tools: float = 0.0
    tool_calls: int = 0

    @property
    def overhead(self) -> float:
        return self.wall - self.model - self.tools


@dataclass
class Run:
    state: ResponseState
    request: ResponseRequest
    caller: CallerMetadata
    tools: dict[str, ToolSpec]
    events: EventStream
    timings: list[StepTiming] = field(default_factory=list)


class Orchestrator:
    def __init__(self, llm: LlmClient, mcp: McpClient, max_steps: int) -> None:
        self._llm = llm
        self._mcp = mcp
        self._max_steps = max_steps

    async def run(self, run: Run, messages: list[dict[str, Any]]) -> None:
        """Produces `run.state.output` and sets its final status (raises ApiError when the model call fails)."""
        state, request = run.state, run.request
        calls_left = request.max_tool_calls
        for step in range(self._max_steps):
            timing = StepTiming()
            run.timings.append(timing)
            started = time.perf_counter()
            body = self._chat_body(run, messages, step)
            if body is None:
                return self._stop(state, "incomplete", "max_output_tokens")
            turn = _Turn(run)
            await turn.read(self._llm.stream_chat(body, run.caller), timing)
            mcp_calls = [item for item in turn.calls if item["type"] == "mcp_call"]
            allowed = mcp_calls if calls_left is None else mcp_calls[:calls_left]
            tools_started = time.perf_counter()
            await self._run_tools(run, allowed)
            timing.tools, timing.tool_calls = time.perf_counter() - tools_started, len(allowed)
            for item in mcp_calls[len(allowed):]:
                item.update(status="incomplete", error="Not run: the response reached max_tool_calls")
                turn.done(item)
            if calls_left is not None:
                calls_left -= len(allowed)
            messages.extend(chat_messages(turn.items))
            timing.wall = time.perf_counter() - started
            if len(allowed) < len(mcp_calls):
                return self._stop(state, "incomplete", "max_tool_calls")
            if not turn.calls:
                if turn.finish_reason == "length":
                    return self._stop(state, "incomplete", "max_output_tokens")
                return self._stop(state, "completed")
            if len(mcp_calls) < len(turn.calls):
                return self._stop(state, "completed")  # client-side function calls: the caller runs them
        self._stop(state, "incomplete", "max_steps")

    def _chat_body(self, run: Run, messages: list[dict[str, Any]], step: int) -> dict[str, Any] | None:
        request, state = run.request, run.state
        body: dict[str, Any] = {"model": request.model, "messages": messages}
        for name, value in (("temperature", request.temperature), ("top_p", request.top_p),
                            ("response_format", request.response_format)):
            if value is not None:
                body[name] = value
        if request.max_output_tokens is not None:
            used = (state.usage or {}).get("output_tokens", 0)
            if used >= request.max_output_tokens:
                return None
            body["max_tokens"] = request.max_output_tokens - used
        choice = request.tool_choice
        if run.tools and choice.mode != "none":
            body["tools"] = [tool.chat_tool() for tool in run.tools.values()]
            body["parallel_tool_calls"] = request.parallel_tool_calls
            # `required` and a named tool force the first step only: once tools have run, the model must be
            # free to answer (else every step would call a tool until the step limit).
            if step > 0 or choice.mode == "auto":
                body["tool_choice"] = "auto"
            elif choice.mode == "required":
                body["tool_choice"] = "required"
            else:
                body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        return body

    async def _run_tools(self, run: Run, calls: list[Item]) -> None:
        if not calls:
            return
        if run.request.parallel_tool_calls:
            await asyncio.gather(*(self._run_tool(run, item) for item in calls))
        else:
            for item in calls:
                await self._run_tool(run, item)

    async def _run_tool(self, run: Run, item: Item) -> None:
        index = run.state.output.index(item)
        run.events.emit("response.mcp_call.in_progress", item_id=item["id"], output_index=index)
        if item["name"] in run.tools:
            result = await self._mcp.call_tool(item["name"], arguments_object(item["arguments"]), run.caller)
        else:
            result = ToolResult(f"Tool '{item['name']}' is not offered to this response", True)
        if result.is_error:
            item.update(status="failed", error=result.text)
            run.events.emit("response.mcp_call.failed", item_id=item["id"], output_index=index)
        else:
            item.update(status="completed", output=result.text)
            run.events.emit("response.mcp_call.completed", item_id=item["id"], output_index=index)
        run.events.emit("response.output_item.done", output_index=index, item=item)

    @staticmethod
    def _stop(state: ResponseState, status: str, reason: str | None = None) -> None:
        state.status = status
        state.incomplete_details = {"reason": reason} if reason else None


class _Turn:
    """One step's model output as it streams in: a message item for text, one item per tool call."""

    def __init__(self, run: Run) -> None:
        self._run = run
        self.items: list[Item] = []
        self.calls: list[Item] = []
        self._message: Item | None = None
        self._message_at = 0
        self._calls_by_index: dict[int, Item] = {}
        self.finish_reason = "stop"

    async def read(self, stream: Any, timing: StepTiming) -> None:
        waited = 0.0
        events = aiter(stream)
        while True:
            before = time.perf_counter()
            try:
                event = await anext(events)
            except StopAsyncIteration:
                break
            finally:
                waited += time.perf_counter() - before
            if isinstance(event, TextDelta):
                self._on_text(event.text)
            elif isinstance(event, ToolCallDelta):
                self._on_call(event)
            elif isinstance(event, StepEnd):
                self.finish_reason = event.finish_reason
                self._run.state.add_usage(event.usage)
        timing.model = waited
        self._close()

    def _add(self, item: Item) -> int:
        output = self._run.state.output
        output.append(item)
        self.items.append(item)
        self._run.events.emit("response.output_item.added", output_index=len(output) - 1, item=dict(item))
        return len(output) - 1

    def done(self, item: Item) -> None:
        index = self._run.state.output.index(item)
        self._run.events.emit("response.output_item.done", output_index=index, item=item)

    def _on_text(self, text: str) -> None:
        events = self._run.events
        if self._message is None:
            # Announced with no content yet; the text part follows in content_part.added (the SDK builds it so).
            self._message = {**message_item(new_id("msg"), "", "in_progress"), "content": []}
            self._message_at = self._add(self._message)
            self._message["content"] = [output_text_part("")]
            events.emit("response.content_part.added", item_id=self._message["id"], output_index=self._message_at,
                        content_index=0, part=output_text_part(""))
        self._message["content"][0]["text"] += text  # kept current: a cancelled response shows what was written
        events.emit("response.output_text.delta", item_id=self._message["id"], output_index=self._message_at,
                    content_index=0, delta=text, logprobs=[])

    def _on_call(self, delta: ToolCallDelta) -> None:
        item = self._calls_by_index.get(delta.index)
        if item is None:
            name = delta.name or ""
            tool = self._run.tools.get(name)
            if tool is not None and tool.server_label is None:
                call_id = delta.call_id or "call_" + secrets.token_hex(12)
                item = function_call_item(new_id("fc"), call_id, name, "", "in_progress")
            else:
                label = tool.server_label if tool is not None and tool.server_label else "jan"
                item = mcp_call_item(new_id("mcp"), name, "", label, "in_progress")
            self._calls_by_index[delta.index] = item
            self.calls.append(item)
            self._add(item)
        if delta.arguments:
            item["arguments"] += delta.arguments
            kind = "function_call_arguments" if item["type"] == "function_call" else "mcp_call_arguments"
            self._run.events.emit(f"response.{kind}.delta", item_id=item["id"],
                                  output_index=self._run.state.output.index(item), delta=delta.arguments)

    def _close(self) -> None:
        """Ends the text item and the tool calls' arguments; function calls are done, MCP calls still to run."""
        events = self._run.events
        if self._message is not None:
            index, text = self._message_at, self._message["content"][0]["text"]
            status = "incomplete" if self.finish_reason == "length" else "completed"
            part = output_text_part(text)
            self._message.update(content=[part], status=status)
            events.emit("response.output_text.done", item_id=self._message["id"], output_index=index,
                        content_index=0, text=text, logprobs=[])
            events.emit("response.content_part.done", item_id=self._message["id"], output_index=index,
                        content_index=0, part=part)
            events.emit("response.output_item.done", output_index=index, item=self._message)
        for item in self.calls:
            index = self._run.state.output.index(item)
            kind = "function_call_arguments" if item["type"] == "function_call" else "mcp_call_arguments"
            events.emit(f"response.{kind}.done", item_id=item["id"], output_index=index,
                        arguments=item["arguments"])
            if item["type"] == "function_call":
                item["status"] = "completed"
                events.emit("response.output_item.done", output_index=index, item=item)
