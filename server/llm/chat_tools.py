"""OpenAI's tool-calling fields of a chat completion request: `tools`, `tool_choice`, `parallel_tool_calls`, and the
`tool_calls` of assistant messages in `messages`. Every rejection is a 400 naming the field in `param`."""

from __future__ import annotations

import re
from typing import Any

from server.core.errors import invalid_request
from server.core.json_body import optional_bool, type_error
from server.llm.backends.base import NamedTool, ToolCall, ToolChoice, ToolSpec

MAX_TOOLS = 128
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
TOOL_CHOICES = ("auto", "none", "required")
# Parameters of a tool declared without any: an object with no properties, as OpenAI reads it.
NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


def parse_tool_fields(payload: dict[str, Any]) -> tuple[tuple[ToolSpec, ...], ToolChoice, bool]:
    """`tools`, `tool_choice` (default auto) and `parallel_tool_calls` (default true)."""
    tools = _parse_tools(payload.get("tools"))
    choice = _parse_tool_choice(payload.get("tool_choice"), tools)
    parallel = optional_bool(payload, "parallel_tool_calls")
    return tools, choice, parallel is not False


def _parse_tools(raw: Any) -> tuple[ToolSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise type_error("tools", "an array of tools")
    if len(raw) > MAX_TOOLS:
        raise invalid_request(f"'tools' takes at most {MAX_TOOLS} tools, got {len(raw)}", param="tools")
    tools = [_parse_tool(item, f"tools[{index}]") for index, item in enumerate(raw)]
    seen: set[str] = set()
    for index, tool in enumerate(tools):
        if tool.name in seen:
            raise invalid_request(f"Tool name '{tool.name}' appears twice", param=f"tools[{index}].function.name")
        seen.add(tool.name)
    return tuple(tools)


def _parse_tool(raw: Any, where: str) -> ToolSpec:
    if not isinstance(raw, dict):
        raise type_error(where, "an object")
    if raw.get("type") != "function":
        raise invalid_request(f"'{where}.type' must be 'function'", param=f"{where}.type")
    function = raw.get("function")
    if not isinstance(function, dict):
        raise type_error(f"{where}.function", "an object")
    name = function.get("name")
    if not isinstance(name, str) or not TOOL_NAME.match(name):
        raise invalid_request(
            f"'{where}.function.name' must be 1 to 64 letters, digits, underscores or dashes",
            param=f"{where}.function.name",
        )
    description = function.get("description")
    if description is not None and not isinstance(description, str):
        raise type_error(f"{where}.function.description", "a string")
    parameters = function.get("parameters")
    if parameters is None:
        parameters = NO_PARAMETERS
    elif not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
        raise invalid_request(
            f"'{where}.function.parameters' must be a JSON schema of an object", param=f"{where}.function.parameters"
        )
    return ToolSpec(name=name, description=description or None, parameters=parameters)


def _parse_tool_choice(raw: Any, tools: tuple[ToolSpec, ...]) -> ToolChoice:
    if raw is None or raw == "auto":
        return "auto"
    if raw == "none":
        return "none"
    if raw == "required":
        choice: ToolChoice = "required"
    elif isinstance(raw, dict):
        # Chat Completions' {type, function: {name}}, and the Responses API's flat {type, name}.
        function = raw.get("function")
        name = function.get("name") if isinstance(function, dict) else raw.get("name")
        if raw.get("type") != "function" or not isinstance(name, str):
            raise invalid_request(
                "'tool_choice' must be 'auto', 'none', 'required' or {\"type\": \"function\", \"function\": "
                "{\"name\": …}}",
                param="tool_choice",
            )
        if name not in {tool.name for tool in tools}:
            raise invalid_request(f"'tool_choice' names the tool '{name}', which is not in 'tools'",
                                  param="tool_choice")
        choice = NamedTool(name)
    else:
        raise invalid_request(f"'tool_choice' must be one of {', '.join(TOOL_CHOICES)} or a named function",
                              param="tool_choice")
    if not tools:
        raise invalid_request("'tool_choice' requires 'tools'", param="tool_choice")
    return choice


def parse_tool_calls(raw: Any, where: str) -> tuple[ToolCall, ...]:
    """The `tool_calls` of an assistant message in the request's history."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise type_error(where, "an array of tool calls")
    calls = []
    for index, item in enumerate(raw):
        at = f"{where}[{index}]"
        if not isinstance(item, dict):
            raise type_error(at, "an object")
        call_id = item.get("id")
        if not isinstance(call_id, str) or not call_id:
            raise type_error(f"{at}.id", "a non-empty string")
        if item.get("type", "function") != "function":
            raise invalid_request(f"'{at}.type' must be 'function'", param=f"{at}.type")
        function = item.get("function")
        if not isinstance(function, dict):
            raise type_error(f"{at}.function", "an object")
        name, arguments = function.get("name"), function.get("arguments")
        if not isinstance(name, str) or not name:
            raise type_error(f"{at}.function.name", "a non-empty string")
        if not isinstance(arguments, str):
            raise type_error(f"{at}.function.arguments", "a string (the arguments as JSON)")
        calls.append(ToolCall(call_id, name, arguments))
    return tuple(calls)


def tool_call_object(call: ToolCall) -> dict[str, Any]:
    """A call as OpenAI's `message.tool_calls` shows it."""
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments_json}}
