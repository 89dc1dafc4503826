"""Tool calling for backends that generate from a raw prompt, in the Hermes convention most small instruct models
were trained on (Qwen2.5, Hermes, SmolLM2's ChatML): the tools as JSON inside `<tools>…</tools>` in the system
message, each call as `<tool_call>{"name": …, "arguments": {…}}</tool_call>`, each result inside
`<tool_response>…</tool_response>` in a `tool` message.

Templates that know tools themselves (they read `tools` and `message.tool_calls`, as HF's tool-use templates do)
get them natively instead; the markup is then theirs, which for the Hermes family is the same.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from server.llm.backends.base import ChatMessage, NamedTool, SamplingParams, TextDelta, ToolCall, ToolSpec

if TYPE_CHECKING:
    from server.llm.backends.prompt import StopStringFilter

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"

_INSTRUCTIONS = (
    "You are a function calling AI model. You are provided with function signatures within <tools></tools> XML "
    "tags. You may call one or more functions to assist with the user query. Don't make assumptions about what "
    "values to plug into functions. Here are the available tools: <tools>\n{tools}\n</tools>\n"
    "For each function call return a json object with function name and arguments within <tool_call></tool_call> "
    "XML tags as follows:\n"
    '<tool_call>\n{{"name": <function-name>, "arguments": <args-dict>}}\n</tool_call>'
)


def tool_definition(tool: ToolSpec) -> dict[str, Any]:
    """The OpenAI form of a tool, which is what HF templates and the Hermes prompt show the model."""
    function: dict[str, Any] = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    function["parameters"] = tool.parameters
    return {"type": "function", "function": function}


def tools_instructions(params: SamplingParams) -> str:
    tools = "\n".join(json.dumps(tool_definition(tool), ensure_ascii=False) for tool in params.tools)
    text = _INSTRUCTIONS.format(tools=tools)
    if isinstance(params.tool_choice, NamedTool):
        text += f"\nCall the function {params.tool_choice.name} now."
    elif params.tool_choice == "required":
        text += "\nCall at least one of the functions now."
    return text


def call_markup(call: ToolCall) -> str:
    """One call as the model writes it. Arguments that are not valid JSON (a client may send anything in history)
    are shown as the string they are."""
    try:
        arguments: Any = json.loads(call.arguments_json)
    except ValueError:
        arguments = call.arguments_json
    body = json.dumps({"name": call.name, "arguments": arguments}, ensure_ascii=False)
    return f"{TOOL_CALL_OPEN}\n{body}\n{TOOL_CALL_CLOSE}"


def with_hermes_tools(messages: list[ChatMessage], params: SamplingParams) -> list[ChatMessage]:
    """The messages with tool calls, tool results and (when tools are enabled) the tools' description as plain
    text, for templates that only render `role` and `content`."""
    rendered = [_hermes_message(message) for message in messages]
    if not params.tools_enabled:
        return rendered
    instructions = tools_instructions(params)
    if rendered and rendered[0].role == "system":
        first = rendered[0]
        return [ChatMessage("system", f"{first.content}\n\n{instructions}" if first.content else instructions),
                *rendered[1:]]
    return [ChatMessage("system", instructions), *rendered]


def _hermes_message(message: ChatMessage) -> ChatMessage:
    if message.role == "tool":
        return ChatMessage("tool", f"<tool_response>\n{message.content}\n</tool_response>")
    if message.tool_calls:
        calls = "\n".join(call_markup(call) for call in message.tool_calls)
        return ChatMessage("assistant", f"{message.content}\n{calls}" if message.content else calls)
    return message


def template_message(message: ChatMessage) -> dict[str, Any]:
    """A message as HF tool-use templates read it: `tool_calls` with arguments as an object."""
    rendered: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name is not None:
        rendered["name"] = message.name
    if message.tool_call_id is not None:
        rendered["tool_call_id"] = message.tool_call_id
    if message.tool_calls:
        rendered["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": _arguments(call)}}
            for call in message.tool_calls
        ]
    return rendered


def _arguments(call: ToolCall) -> Any:
    try:
        return json.loads(call.arguments_json)
    except ValueError:
        return call.arguments_json


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def parse_tool_calls(text: str) -> list[ToolCall]:
    """The complete `<tool_call>` blocks of generated text (under the tool grammar, all of it is such blocks).
    A block cut off by the token limit is dropped."""
    decoder = json.JSONDecoder()
    calls: list[ToolCall] = []
    position = 0
    while (start := text.find(TOOL_CALL_OPEN, position)) >= 0:
        brace = text.find("{", start)
        if brace < 0:
            break
        try:
            call, end = decoder.raw_decode(text, brace)
        except ValueError:
            break
        if not (isinstance(call, dict) and isinstance(call.get("name"), str) and TOOL_CALL_CLOSE in text[end:]):
            break
        arguments = json.dumps(call.get("arguments", {}), ensure_ascii=False)
        calls.append(ToolCall(new_call_id(), call["name"], arguments))
        position = text.index(TOOL_CALL_CLOSE, end) + len(TOOL_CALL_CLOSE)
    return calls


class ToolReply:
    """Routes generated text: streamed through the stop filter as an answer, or, when the turn turns out to be tool
    calls (the tool grammar makes calls start with "<", answers not), held back whole and parsed at the end, so
    the markup never reaches the client."""

    def __init__(self, emit: Callable[[TextDelta | ToolCall], object], stops: StopStringFilter, *,
                 undecided: bool) -> None:
        self._emit = emit
        self._stops = stops
        self._undecided = undecided  # tools are enabled and no character was generated yet
        self._calls: list[str] | None = None  # the held-back text once it turned out to be tool calls
        self.repeating = False  # the model began calling the same tool with the same arguments again

    @property
    def answering(self) -> bool:
        """The turn is a text answer, not tool calls."""
        return not self._undecided and self._calls is None

    def push(self, text: str) -> None:
        if self._undecided and text:
            self._undecided = False
            if text.lstrip().startswith(TOOL_CALL_OPEN[0]):
                self._calls = []
        if self._calls is not None:
            self._calls.append(text)
            if ">" in text:
                # Small models repeat a call until max_tokens when parallel calls are allowed: stop at the first
                # repeat (it is dropped).
                calls = parse_tool_calls("".join(self._calls))
                self.repeating = len({(c.name, c.arguments_json) for c in calls}) < len(calls)
            return
        safe = self._stops.push(text)
        if safe:
            self._emit(TextDelta(safe))

    def finish(self) -> bool:
        """Emits what is left: the answer's held-back tail, or the parsed tool calls without repeats. True if
        tools were called (calls cut off by the token limit are dropped)."""
        if self._calls is None:
            tail = self._stops.flush()
            if tail:
                self._emit(TextDelta(tail))
            return False
        seen: set[tuple[str, str]] = set()
        for call in parse_tool_calls("".join(self._calls)):
            if (call.name, call.arguments_json) not in seen:
                seen.add((call.name, call.arguments_json))
                self._emit(call)
        return bool(seen)
