"""OpenAI's chat-completions wire format, as the upstream backend speaks it: our messages and sampling parameters
as a request body, and the upstream's SSE chunks back as generation events.

Servers differ in what they put in a chunk: llama_cpp.server repeats a tool call's id and name in every delta and
sends no usage when streaming; vLLM and OpenAI send the id and name once and a usage chunk at the end when asked
(`stream_options.include_usage`). The parser takes the first id and name of each call index, concatenates the
argument pieces, and reports the usage it was given, or zero tokens when none came (it never guesses a count).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

from server.core.errors import ApiError
from server.llm.backends.base import ChatMessage, Finish, NamedTool, SamplingParams, TextDelta, ToolCall

JsonSchemaFormat = Literal["json_schema", "json_object_schema"]


def request_body(
    model: str, messages: list[ChatMessage], params: SamplingParams, json_schema_format: JsonSchemaFormat
) -> dict[str, Any]:
    """A streaming chat-completions request: only what differs from OpenAI's defaults is sent, except
    temperature and top_p, which servers default differently."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [_message(message) for message in messages],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": params.temperature,
        "top_p": params.top_p,
    }
    if params.max_tokens is not None:
        body["max_tokens"] = params.max_tokens
    if params.stop:
        body["stop"] = list(params.stop)
    if params.seed is not None:
        body["seed"] = params.seed
    if params.presence_penalty:
        body["presence_penalty"] = params.presence_penalty
    if params.frequency_penalty:
        body["frequency_penalty"] = params.frequency_penalty
    if params.json_schema is not None:
        if json_schema_format == "json_schema":
            body["response_format"] = {
                "type": "json_schema", "json_schema": {"name": "response", "schema": params.json_schema},
            }
        else:
            body["response_format"] = {"type": "json_object", "schema": params.json_schema}
    elif params.json_object:
        body["response_format"] = {"type": "json_object"}
    if params.tools:
        body["tools"] = [
            {"type": "function", "function": {
                "name": tool.name,
                **({"description": tool.description} if tool.description is not None else {}),
                "parameters": tool.parameters,
            }}
            for tool in params.tools
        ]
        choice = params.tool_choice
        body["tool_choice"] = (
            {"type": "function", "function": {"name": choice.name}} if isinstance(choice, NamedTool) else choice
        )
        if not params.parallel_tool_calls:
            body["parallel_tool_calls"] = False
    return body


def _message(message: ChatMessage) -> dict[str, Any]:
    wire: dict[str, Any] = {"role": message.role}
    if message.images:
        parts: list[dict[str, Any]] = [{"type": "text", "text": message.content}] if message.content else []
        parts.extend({"type": "image_url", "image_url": {"url": url}} for url in message.images)
        wire["content"] = parts
    elif message.tool_calls:
        # A string even when empty: llama_cpp.server refuses a null content (OpenAI and vLLM take either).
        wire["content"] = message.content
        wire["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments_json}}
            for call in message.tool_calls
        ]
    else:
        wire["content"] = message.content
    if message.name is not None:
        wire["name"] = message.name
    if message.tool_call_id is not None:
        wire["tool_call_id"] = message.tool_call_id
    return wire


def upstream_failure(message: str) -> ApiError:
    """The upstream failed or answered something we cannot use: 502, as a gateway reports a bad upstream."""
    return ApiError(502, message, code="upstream_error")


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class ChunkParser:
    """Turns the upstream's SSE lines, one at a time, into TextDelta events; `finish()` then gives the ToolCall
    events and the Finish event. Only choice 0 is read (requests ask for one)."""

    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    _calls: dict[int, _PartialCall] = field(default_factory=dict)

    def line(self, line: str) -> TextDelta | None:
        """One line of the event stream; returns the text it carried, if any. Other SSE fields (`event:`, `id:`,
        comments) and blank lines carry nothing."""
        if not line.startswith("data:"):
            return None
        data = line[5:].strip()
        if data == "[DONE]":  # the end; reading on to the connection's end of the response lets it be reused
            return None
        try:
            chunk = json.loads(data)
        except ValueError as error:
            raise upstream_failure(f"The upstream sent a malformed stream chunk: {data[:200]!r}") from error
        if not isinstance(chunk, dict):
            raise upstream_failure("The upstream sent a stream chunk that is not an object")
        if "error" in chunk:
            raise upstream_failure(f"The upstream failed mid-stream: {error_message(chunk)}")
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.prompt_tokens = _count(usage.get("prompt_tokens"))
            self.completion_tokens = _count(usage.get("completion_tokens"))
        choices = chunk.get("choices")
        if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
            return None
        choice = choices[0]
        if choice.get("finish_reason"):
            self.finish_reason = str(choice["finish_reason"])
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return None
        tool_calls = delta.get("tool_calls")
        if isinstance(tool_calls, list):
            self._add_call_pieces(tool_calls)
        content = delta.get("content")
        return TextDelta(content) if isinstance(content, str) and content else None

    def _add_call_pieces(self, pieces: list[Any]) -> None:
        for position, piece in enumerate(pieces):
            if not isinstance(piece, dict):
                continue
            index = piece.get("index")
            call = self._calls.setdefault(index if isinstance(index, int) else position, _PartialCall())
            if not call.id and isinstance(piece.get("id"), str):
                call.id = piece["id"]
            function = piece.get("function")
            if isinstance(function, dict):
                if not call.name and isinstance(function.get("name"), str):
                    call.name = function["name"]
                if isinstance(function.get("arguments"), str):
                    call.arguments.append(function["arguments"])

    def finish(self) -> list[ToolCall | Finish]:
        """The tool calls, in index order, then the Finish. A stream that ended without a finish_reason was cut
        short (llama_cpp.server does that to a stream when another request arrives, `[DONE]` included): 502."""
        if self.finish_reason is None:
            raise upstream_failure("The upstream ended the stream before the answer was complete")
        calls: list[ToolCall | Finish] = [
            ToolCall(call.id or "call_" + secrets.token_hex(12), call.name, "".join(call.arguments) or "{}")
            for _, call in sorted(self._calls.items())
            if call.name
        ]
        reason: Literal["stop", "length", "tool_calls"] = "stop"
        if calls:
            reason = "tool_calls"
        elif self.finish_reason == "length":
            reason = "length"
        return [*calls, Finish(reason, self.prompt_tokens, self.completion_tokens)]


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def error_message(payload: Any) -> str:
    """The human-readable message of an upstream error body: OpenAI's `{"error": {"message"}}`, `{"error": "..."}`,
    FastAPI's `{"detail": ...}` or a bare `{"message"}`."""
    if isinstance(payload, dict):
        error = payload.get("error", payload)
        if isinstance(error, str):
            return error
        if isinstance(error, dict):
            for key in ("message", "detail"):
                if error.get(key):
                    value = error[key]
                    return value if isinstance(value, str) else json.dumps(value)[:500]
    return json.dumps(payload)[:500]
