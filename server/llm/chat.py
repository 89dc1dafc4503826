"""Chat completions: request in, OpenAI-shaped JSON or SSE events out.

Transport-neutral: yields (content_type, bytes) pieces of the HTTP body; the servicer wraps them in HttpBody.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from server.llm.backends.base import Finish, TextDelta
from server.llm.chat_request import ChatCompletionRequest, parse_chat_request
from server.llm.models import ModelRegistry

SSE = "text/event-stream"
JSON = "application/json"
DONE = b"data: [DONE]\n\n"

Event = TextDelta | Finish


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def sse_event(value: Any) -> bytes:
    return b"data: " + _dumps(value) + b"\n\n"


def _usage(finish: Finish) -> dict[str, int]:
    return {
        "prompt_tokens": finish.prompt_tokens,
        "completion_tokens": finish.completion_tokens,
        "total_tokens": finish.prompt_tokens + finish.completion_tokens,
    }


class ChatCompletions:
    def __init__(self, models: ModelRegistry) -> None:
        self._models = models

    async def create(self, body: bytes) -> AsyncIterator[tuple[str, bytes]]:
        request = parse_chat_request(body)
        backend = self._models.get(request.model)
        events = backend.generate(request.messages, request.sampling)
        async with aclosing(events):
            # Admission errors (queue full, prompt too long) surface here, before any byte is written,
            # so they can still become a proper HTTP status.
            first = await anext(events)
            completion = _Completion(request, "chatcmpl-" + secrets.token_hex(12), int(time.time()))
            if request.stream:
                async for piece in completion.stream(first, events):
                    yield SSE, piece
            else:
                yield JSON, await completion.collect(first, events)


@dataclass(frozen=True)
class _Completion:
    """One completion being answered: the fields every JSON object or chunk of it repeats."""

    request: ChatCompletionRequest
    id: str
    created: int

    def _envelope(self, object_type: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": object_type,
            "created": self.created,
            "model": self.request.model,
            "system_fingerprint": None,
        }

    async def collect(self, event: Event, events: AsyncIterator[Event]) -> bytes:
        parts: list[str] = []
        while isinstance(event, TextDelta):
            parts.append(event.text)
            event = await anext(events)
        message = {"role": "assistant", "content": "".join(parts), "refusal": None}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": event.finish_reason}
        return _dumps({**self._envelope("chat.completion"), "choices": [choice], "usage": _usage(event)})

    async def stream(self, event: Event, events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
        include_usage = self.request.include_usage

        def chunk(delta: dict[str, Any], finish_reason: str | None) -> bytes:
            body = self._envelope("chat.completion.chunk")
            body["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
            if include_usage:
                body["usage"] = None
            return sse_event(body)

        # Content chunks are the hot path (one per token): only the text is encoded per chunk.
        head, _, tail = chunk({"content": "\0"}, None).partition(b'"\\u0000"')
        role_sent = False
        while isinstance(event, TextDelta):
            if role_sent:
                yield head + _dumps(event.text) + tail
            else:
                yield chunk({"role": "assistant", "content": event.text, "refusal": None}, None)
                role_sent = True
            event = await anext(events)
        if not role_sent:
            yield chunk({"role": "assistant", "content": "", "refusal": None}, None)
        yield chunk({}, event.finish_reason)
        if include_usage:
            yield sse_event({**self._envelope("chat.completion.chunk"), "choices": [], "usage": _usage(event)})
        yield DONE
