"""The one interface every MCP tool implements, and what a call returns.

A tool is its MCP description (name, description, JSON Schemas) plus an async `call`. The MCP endpoint, the typed
gRPC service (jan.mcp.v1) and the Responses API all call tools through the registry (server/mcp/tools/registry.py),
never directly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ToolContext:
    """Who is calling: tools that keep data (search cache aside) scope it to `user_id`."""

    user_id: str
    request_id: str


class ToolError(Exception):
    """The tool ran and failed in a way the model or user should read: the result is `isError: true` with this
    message (MCP: tool execution errors are results, not protocol errors)."""


class InvalidToolArguments(Exception):
    """The arguments do not match the tool's input schema: a JSON-RPC -32602 error naming the argument."""


class Tool(ABC):
    name: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]

    def unavailable_reason(self) -> str | None:
        """None when the tool can run; otherwise why not and how to fix it (e.g. which setting is missing).

        Such a tool still lists, with the reason in its description, and a call answers `isError` with it.
        """
        return None

    @abstractmethod
    async def call(self, context: ToolContext, arguments: dict[str, Any]) -> dict[str, Any]:
        """Runs the tool; returns the result payload (the original Jan Server's JSON). Raises ToolError or
        InvalidToolArguments. Must never block the event loop."""
