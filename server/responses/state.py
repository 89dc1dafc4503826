"""A response as it stands: what was asked, what has been produced, and how it ended; and its JSON object."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from server.core.errors import ApiError
from server.responses.items import Item, output_text


@dataclass
class ResponseState:
    id: str
    model: str
    created_at: int
    status: str
    settings: dict[str, Any]
    background: bool = False
    previous_response_id: str | None = None
    conversation_id: str | None = None
    output: list[Item] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    completed_at: int | None = None
    # The error a foreground, non-streaming caller gets as its HTTP answer when the response failed.
    failure: ApiError | None = None

    def add_usage(self, usage: dict[str, int]) -> None:
        total = self.usage or empty_usage()
        total["input_tokens"] += int(usage.get("prompt_tokens", 0))
        total["output_tokens"] += int(usage.get("completion_tokens", 0))
        total["total_tokens"] = total["input_tokens"] + total["output_tokens"]
        self.usage = total

    def end_open_items(self) -> None:
        """Items cut short by a cancel or a failure."""
        for item in self.output:
            if item.get("status") == "in_progress":
                item["status"] = "incomplete"

    def fail(self, error: ApiError) -> None:
        self.status = "failed"
        self.error = {"code": error.code or "server_error", "message": error.message}
        self.failure = error

    def to_json(self) -> dict[str, Any]:
        settings = self.settings
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": self.status,
            "background": self.background,
            "completed_at": self.completed_at,
            "error": self.error,
            "incomplete_details": self.incomplete_details,
            "instructions": settings.get("instructions"),
            "max_output_tokens": settings.get("max_output_tokens"),
            "max_tool_calls": settings.get("max_tool_calls"),
            "metadata": settings.get("metadata") or {},
            "model": self.model,
            "output": self.output,
            "output_text": output_text(self.output),
            "parallel_tool_calls": settings.get("parallel_tool_calls", True),
            "previous_response_id": self.previous_response_id,
            "conversation": {"id": self.conversation_id} if self.conversation_id else None,
            "reasoning": None,
            "store": settings.get("store", True),
            "temperature": settings.get("temperature"),
            "text": settings.get("text") or {"format": {"type": "text"}},
            "tool_choice": settings.get("tool_choice", "auto"),
            "tools": settings.get("tools") or [],
            "top_p": settings.get("top_p"),
            "truncation": settings.get("truncation", "disabled"),
            "usage": self.usage,
            "user": settings.get("user"),
        }


def empty_usage() -> dict[str, Any]:
    return {"input_tokens": 0, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 0,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 0}
