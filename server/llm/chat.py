"""Chat completions: request in, OpenAI-shaped JSON or SSE events out.

Transport-neutral: yields (content_type, bytes) pieces of the HTTP body; the servicer wraps them in HttpBody.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from server.llm.backends.base import Finish, TextDelta
from server.llm.chat_request import ChatCompletionRequest, parse_chat_request
from server.llm.completions.service import StoredCompletions
from server.llm.memory import ConversationMemory
from server.llm.models import ModelRegistry

SSE = "text/event-stream"
JSON = "application/json"
DONE = b"data: [DONE]\n\n"

Event = TextDelta | Finish
# Called with the whole answer once it is complete; returns the reply's `conversation` field, if any.
OnFinish = Callable[[str, Finish], Awaitable[dict[str, Any] | None]]
# Called with the finished `chat.completion` object (a streamed one in its non-stream form) before it is sent.
Keep = Callable[[dict[str, Any]], Awaitable[None]]


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


async def _no_conversation(answer: str, finish: Finish) -> None:
    return None


async def _keep_nothing(completion: dict[str, Any]) -> None:
    return None


class ChatCompletions:
    def __init__(self, models: ModelRegistry, memory: ConversationMemory, stored: StoredCompletions) -> None:
        self._models = models
        self._memory = memory
        self._stored = stored

    async def create(self, body: bytes, user_id: str) -> AsyncIterator[tuple[str, bytes]]:
        request = parse_chat_request(body)
        backend = self._models.get(request.model)
        messages, history = request.messages, range(0)
        on_finish: OnFinish = _no_conversation
        if request.conversation_id is not None:
            turn = await self._memory.open(
                user_id, request.conversation_id, request.messages, backend.info.context_size
            )
            messages, history = turn.messages, turn.history

            async def continue_conversation(answer: str, finish: Finish) -> dict[str, Any] | None:
                if not request.store:
                    return {"id": turn.conversation_id, "title": turn.title}
                return await self._memory.append(user_id, turn, answer, finish.finish_reason)

            on_finish = continue_conversation

        keep: Keep = _keep_nothing
        if request.store_completion:

            async def store_completion(completion: dict[str, Any]) -> None:
                await self._stored.add(user_id, completion, request.stored_messages, request.metadata)

            keep = store_completion

        events = backend.generate(messages, request.sampling, history)
        async with aclosing(events):
            # Admission errors (queue full, prompt too long) surface here, before any byte is written,
            # so they can still become a proper HTTP status.
            first = await anext(events)
            completion = _Completion(request, "chatcmpl-" + secrets.token_hex(12), int(time.time()), on_finish, keep)
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
    on_finish: OnFinish
    keep: Keep = _keep_nothing

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
        answer = "".join(parts)
        conversation = await self.on_finish(answer, event)
        body = self._completion_object(answer, event, conversation)
        await self.keep(body)
        return _dumps(body)

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
        answer: list[str] = []
        while isinstance(event, TextDelta):
            answer.append(event.text)
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
        text = "".join(answer)
        conversation = await self.on_finish(text, event)
        if conversation is not None:
            yield sse_event({**self._envelope("chat.completion.chunk"), "choices": [], "conversation": conversation})
        await self.keep(self._completion_object(text, event, conversation))
        yield DONE

    def _completion_object(self, answer: str, finish: Finish, conversation: dict[str, Any] | None) -> dict[str, Any]:
        """The `chat.completion` object: the non-stream reply, and what a stored completion keeps."""
        message = {"role": "assistant", "content": answer, "refusal": None}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish.finish_reason}
        body = {**self._envelope("chat.completion"), "choices": [choice], "usage": _usage(finish)}
        if conversation is not None:
            body["conversation"] = conversation
        return body
