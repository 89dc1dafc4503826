"""Chat completions: request in, OpenAI-shaped JSON or SSE events out.

Transport-neutral: yields (content_type, bytes) pieces of the HTTP body; the servicer wraps them in HttpBody.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from server.llm.backends.base import Finish, TextDelta
from server.llm.chat_request import ChatCompletionRequest, parse_chat_request
from server.llm.models import ModelRegistry

SSE = "text/event-stream"
JSON = "application/json"
DONE = b"data: [DONE]\n\n"


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
            completion_id = "chatcmpl-" + secrets.token_hex(12)
            created = int(time.time())
            if request.stream:
                async for piece in self._stream(request, completion_id, created, first, events):
                    yield SSE, piece
            else:
                yield JSON, await self._collect(request, completion_id, created, first, events)

    async def _collect(
        self,
        request: ChatCompletionRequest,
        completion_id: str,
        created: int,
        first: TextDelta | Finish,
        events: AsyncIterator[TextDelta | Finish],
    ) -> bytes:
        parts: list[str] = []
        event = first
        while isinstance(event, TextDelta):
            parts.append(event.text)
            event = await anext(events)
        return _dumps(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": request.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(parts), "refusal": None},
                        "logprobs": None,
                        "finish_reason": event.finish_reason,
                    }
                ],
                "usage": _usage(event),
                "system_fingerprint": None,
            }
        )

    async def _stream(
        self,
        request: ChatCompletionRequest,
        completion_id: str,
        created: int,
        first: TextDelta | Finish,
        events: AsyncIterator[TextDelta | Finish],
    ) -> AsyncIterator[bytes]:
        def chunk(delta: dict[str, Any], finish_reason: str | None) -> bytes:
            body: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": request.model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if request.include_usage:
                body["usage"] = None
            return sse_event(body)

        event = first
        role_sent = False
        while isinstance(event, TextDelta):
            if role_sent:
                yield chunk({"content": event.text}, None)
            else:
                yield chunk({"role": "assistant", "content": event.text, "refusal": None}, None)
                role_sent = True
            event = await anext(events)
        if not role_sent:
            yield chunk({"role": "assistant", "content": "", "refusal": None}, None)
        yield chunk({}, event.finish_reason)
        if request.include_usage:
            yield sse_event(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": request.model,
                    "system_fingerprint": None,
                    "choices": [],
                    "usage": _usage(event),
                }
            )
        yield DONE
