"""The tool registry: the one place tools are listed, validated and called (MCP endpoint, typed gRPC, Responses API).

A call never raises for a tool's own failure: unavailable backends, ToolError and unexpected exceptions all become
an `isError` result the caller (often a model) can read. Only what is wrong with the request itself raises:
`UnknownTool` and `InvalidToolArguments`, which each transport reports in its own way.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.core.config import Settings
from server.core.observability.metrics import TOOL_CALL_DURATION, TOOL_CALLS
from server.llm.embeddings import Embedder
from server.mcp.tools.base import InvalidToolArguments, Tool, ToolContext, ToolError
from server.mcp.tools.file_search.tools import file_search_tools
from server.mcp.tools.python_exec import PythonExecTool
from server.mcp.tools.web import web_tools

log = logging.getLogger(__name__)

# Validation messages quote the offending value, which may be a whole program or document.
_MAX_MESSAGE_CHARS = 500


class UnknownTool(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"Unknown tool: {name!r}")
        self.name = name


@dataclass(frozen=True)
class ToolResult:
    """A tool's answer: the payload, or (`is_error`) the message saying why there is none."""

    payload: dict[str, Any] | None
    error: str | None = None

    @property
    def is_error(self) -> bool:
        return self.error is not None

    @property
    def text(self) -> str:
        """What `content[0].text` carries: the payload's JSON, or the error message."""
        if self.error is not None:
            return self.error
        return json.dumps(self.payload, ensure_ascii=False)

    def to_mcp(self) -> dict[str, Any]:
        """MCP's CallToolResult. Structured content is for successful results only (it must match outputSchema)."""
        result: dict[str, Any] = {"content": [{"type": "text", "text": self.text}], "isError": self.is_error}
        if self.payload is not None:
            result["structuredContent"] = self.payload
        return result


def _truncated(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[: _MAX_MESSAGE_CHARS - 1] + "…"


def _describe(error: ValidationError, tool: str) -> tuple[str, str | None]:
    """A readable message naming the argument at fault, and that argument's name."""
    path = [str(part) for part in error.absolute_path]
    argument = path[0] if path else None
    if argument is None and error.validator == "required":
        # "'q' is a required property": the missing name is the first quoted word.
        argument = str(error.message).split("'")[1] if error.message.count("'") >= 2 else None
    where = f"argument '{'.'.join(path)}': " if path else ""
    return _truncated(f"Invalid arguments for tool '{tool}': {where}{error.message}"), argument


class InvalidArguments(InvalidToolArguments):
    """InvalidToolArguments that also knows which argument is at fault (for the typed API's `param`)."""

    def __init__(self, message: str, argument: str | None) -> None:
        super().__init__(message)
        self.argument = argument


class ToolRegistry:
    def __init__(self, tools: Sequence[Tool]) -> None:
        self._tools: dict[str, Tool] = {}
        self._validators: dict[str, Draft202012Validator] = {}
        for tool in tools:
            if tool.name in self._tools:
                raise ValueError(f"two tools named {tool.name!r}")
            Draft202012Validator.check_schema(tool.input_schema)
            self._tools[tool.name] = tool
            self._validators[tool.name] = Draft202012Validator(tool.input_schema)

    def tools(self) -> list[Tool]:
        """Every tool, in registration order, whether it can run now or not."""
        return list(self._tools.values())

    def get(self, name: str) -> Tool:
        tool = self._tools.get(name)
        if tool is None:
            raise UnknownTool(name)
        return tool

    def describe(self, tool: Tool) -> dict[str, Any]:
        """The tool as MCP's `tools/list` shows it. One that cannot run says why in its description."""
        reason = tool.unavailable_reason()
        description = tool.description if reason is None else f"{tool.description} (unavailable: {reason})"
        return {
            "name": tool.name,
            "description": description,
            "inputSchema": tool.input_schema,
            "outputSchema": tool.output_schema,
        }

    def validate(self, name: str, arguments: dict[str, Any]) -> None:
        """Raises UnknownTool, or InvalidArguments naming the first argument at fault."""
        self.get(name)
        error = best_match(self._validators[name].iter_errors(arguments))
        if error is not None:
            message, argument = _describe(error, name)
            raise InvalidArguments(message, argument)

    async def call(self, name: str, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        """Validates and runs a tool. Raises UnknownTool or InvalidToolArguments; anything else is a result."""
        try:
            self.validate(name, arguments)
        except UnknownTool:
            TOOL_CALLS.labels("unknown", "unknown_tool").inc()  # the name is the caller's: not a label
            raise
        except InvalidToolArguments:
            TOOL_CALLS.labels(name, "invalid_arguments").inc()
            raise
        tool = self._tools[name]
        reason = tool.unavailable_reason()
        if reason is not None:
            TOOL_CALLS.labels(name, "unavailable").inc()
            return ToolResult(payload=None, error=f"Tool '{name}' is unavailable: {reason}")
        started = time.perf_counter()
        try:
            result = await self._run(tool, arguments, context)
        except InvalidToolArguments:
            TOOL_CALLS.labels(name, "invalid_arguments").inc()
            raise
        finally:
            TOOL_CALL_DURATION.labels(name).observe(time.perf_counter() - started)
        TOOL_CALLS.labels(name, "error" if result.is_error else "ok").inc()
        return result

    async def _run(self, tool: Tool, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        name = tool.name
        try:
            payload = await tool.call(context, arguments)
            json.dumps(payload)  # a payload that cannot be sent is the tool's bug, reported below
        except InvalidToolArguments:
            raise
        except ToolError as error:
            return ToolResult(payload=None, error=str(error) or f"Tool '{name}' failed")
        except Exception:
            log.exception("tool %s failed (request %s)", name, context.request_id)
            return ToolResult(
                payload=None, error=f"Tool '{name}' failed with an internal error (request {context.request_id})"
            )
        return ToolResult(payload=payload)


def build_tools(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], embedder: Embedder | None
) -> list[Tool]:
    """Every tool this server offers, in the order `tools/list` shows them (the original's order).

    Each tool decides for itself whether it can run (`unavailable_reason`), so all are always listed.
    """
    tools: list[Tool] = []
    # Web: google_search, scrape (server/mcp/tools/web)
    tools += web_tools(settings, sessions)
    # File search: file_search_index, file_search_query (server/mcp/tools/file_search; needs `embedder`)
    tools += file_search_tools(settings, sessions, embedder)
    # Python sandbox: python_exec (server/mcp/tools/python_exec)
    tools.append(PythonExecTool(settings))
    return tools
