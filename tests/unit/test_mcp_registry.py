"""The tool registry's contract: what becomes an `isError` result and what is an error of the request."""

from __future__ import annotations

import json
from typing import Any

import pytest

from server.mcp.tools.base import InvalidToolArguments, Tool, ToolContext, ToolError
from server.mcp.tools.registry import InvalidArguments, ToolRegistry, UnknownTool

CONTEXT = ToolContext(user_id="user_1", request_id="req_1")


class Echo(Tool):
    """Answers its arguments, or fails the way `mode` says."""

    name = "echo"
    description = "Echoes."

    def __init__(self, unavailable: str | None = None) -> None:
        self._unavailable = unavailable
        self.input_schema = {
            "type": "object",
            "properties": {"text": {"type": "string"}, "count": {"type": "integer", "minimum": 1}, "mode": {}},
            "required": ["text"],
            "additionalProperties": False,
        }
        self.output_schema = {"type": "object"}

    def unavailable_reason(self) -> str | None:
        return self._unavailable

    async def call(self, context: ToolContext, arguments: dict[str, Any]) -> dict[str, Any]:
        mode = arguments.get("mode")
        if mode == "tool_error":
            raise ToolError("the backend said no")
        if mode == "bad_argument":
            raise InvalidToolArguments("text must not be empty")
        if mode == "bug":
            raise RuntimeError("secret internals")
        if mode == "unserializable":
            return {"value": object()}
        return {"text": arguments["text"], "user": context.user_id}


async def test_a_successful_call_carries_the_payload_twice() -> None:
    result = await ToolRegistry([Echo()]).call("echo", {"text": "hi"}, CONTEXT)
    mcp = result.to_mcp()
    assert mcp["isError"] is False and mcp["structuredContent"] == {"text": "hi", "user": "user_1"}
    assert json.loads(mcp["content"][0]["text"]) == mcp["structuredContent"]


@pytest.mark.parametrize(("arguments", "argument", "words"), [
    ({}, "text", "'text' is a required property"),
    ({"text": 3}, "text", "argument 'text'"),
    ({"text": "x", "count": 0}, "count", "argument 'count'"),
    ({"text": "x", "count": 1.5}, "count", "is not of type 'integer'"),
    ({"text": "x", "other": 1}, None, "'other' was unexpected"),
])
async def test_arguments_are_validated_against_the_input_schema(
    arguments: dict[str, Any], argument: str | None, words: str
) -> None:
    with pytest.raises(InvalidArguments) as error:
        await ToolRegistry([Echo()]).call("echo", arguments, CONTEXT)
    assert error.value.argument == argument and words in str(error.value)


async def test_request_errors_raise() -> None:
    registry = ToolRegistry([Echo()])
    with pytest.raises(UnknownTool):
        await registry.call("nope", {}, CONTEXT)
    with pytest.raises(InvalidToolArguments, match="must not be empty"):
        await registry.call("echo", {"text": "", "mode": "bad_argument"}, CONTEXT)


@pytest.mark.parametrize(("mode", "message"), [
    ("tool_error", "the backend said no"),
    ("bug", "Tool 'echo' failed with an internal error (request req_1)"),
    ("unserializable", "Tool 'echo' failed with an internal error (request req_1)"),
])
async def test_tool_failures_are_error_results(mode: str, message: str) -> None:
    result = await ToolRegistry([Echo()]).call("echo", {"text": "x", "mode": mode}, CONTEXT)
    assert result.to_mcp() == {"content": [{"type": "text", "text": message}], "isError": True}
    assert "secret" not in result.text


async def test_an_unavailable_tool_lists_with_its_reason_and_answers_it() -> None:
    registry = ToolRegistry([Echo(unavailable="set JAN_ECHO_URL")])
    assert registry.describe(registry.get("echo"))["description"] == "Echoes. (unavailable: set JAN_ECHO_URL)"
    result = await registry.call("echo", {"text": "x"}, CONTEXT)
    assert result.is_error and "set JAN_ECHO_URL" in result.text
    assert ToolRegistry([Echo()]).describe(Echo())["description"] == "Echoes."


def test_names_are_unique_and_schemas_valid() -> None:
    with pytest.raises(ValueError, match="two tools"):
        ToolRegistry([Echo(), Echo()])
    broken = Echo()
    broken.input_schema = {"type": "no such type"}
    with pytest.raises(Exception, match="no such type"):
        ToolRegistry([broken])
