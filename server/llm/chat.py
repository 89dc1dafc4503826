"""Chat completions: request in, OpenAI-shaped JSON or SSE events out.

Transport-neutral: yields (content_type, bytes) pieces of the HTTP body; the servicer wraps them in HttpBody.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from server.core.errors import ApiError
from server.core.json_body import parse_object
from server.core.observability import metrics
from server.llm.backends.base import Finish, GenerationEvent, TextDelta, ToolCall
from server.llm.capabilities import checked_chat_request
from server.llm.catalog.router import Route
from server.llm.chat_media import MediaResolver, resolve_placeholders
from server.llm.chat_request import ChatCompletionRequest, parse_chat_request, requested_model
from server.llm.chat_tools import tool_call_object
from server.llm.completions.service import StoredCompletions
from server.llm.memory import ConversationMemory

SSE = "text/event-stream"
JSON = "application/json"
DONE = b"data: [DONE]\n\n"

Event = GenerationEvent
# Called with the whole answer (text and tool calls) once it is complete; returns the reply's `conversation` field.
OnFinish = Callable[[str, list[ToolCall], Finish], Awaitable[dict[str, Any] | None]]
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


async def _no_conversation(answer: str, calls: list[ToolCall], finish: Finish) -> None:
    return None


async def _keep_nothing(completion: dict[str, Any]) -> None:
    return None


class ChatCompletions:
    """`route` finds the model a request names (ModelRouter.route). `resolve_media` turns `data:<mime>;jan_<id>`
    placeholders into URLs or data URLs (the media service's); without it, a request holding a placeholder is
    refused."""

    def __init__(
        self,
        route: Callable[[str], Route],
        memory: ConversationMemory,
        stored: StoredCompletions,
        resolve_media: MediaResolver | None = None,
    ) -> None:
        self._route = route
        self._memory = memory
        self._stored = stored
        self._resolve_media = resolve_media

    async def create(self, body: bytes, user_id: str) -> AsyncIterator[tuple[str, bytes]]:
        payload = parse_object(body)
        route = self._route(requested_model(payload))
        # The model's defaults fill what the request leaves out; answers name the model an alias stands for.
        request = checked_chat_request(
            parse_chat_request({**route.default_params, **payload, "model": route.model_id}), route
        )
        backend = route.backend
        messages, history = request.messages, range(0)
        on_finish: OnFinish = _no_conversation
        if request.conversation_id is not None:
            turn = await self._memory.open(
                user_id, request.conversation_id, request.messages, backend.info.context_size,
                with_images=backend.info.vision,
            )
            messages, history = turn.messages, turn.history

            async def continue_conversation(
                answer: str, calls: list[ToolCall], finish: Finish
            ) -> dict[str, Any] | None:
                if not request.store:
                    return {"id": turn.conversation_id, "title": turn.title}
                return await self._memory.append(user_id, turn, answer, calls, finish.finish_reason)

            on_finish = continue_conversation

        keep: Keep = _keep_nothing
        if request.store_completion:

            async def store_completion(completion: dict[str, Any]) -> None:
                await self._stored.add(user_id, completion, request.stored_messages, request.metadata)

            keep = store_completion

        # After the conversation is read: stored turns may hold placeholders too (the stored form keeps them).
        messages = await resolve_placeholders(messages, backend.info, user_id, self._resolve_media)
        events = _measured(route.model_id, backend.generate(messages, request.sampling, history))
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


async def _measured(model_id: str, events: AsyncGenerator[Event, None]) -> AsyncGenerator[Event, None]:
    """The generation's events, unchanged, feeding the chat metrics: time to the first delta and between deltas,
    tokens in and out, and the backend's errors (a full queue's 429 included)."""
    # The model's series, looked up once: every token passes here.
    time_to_first = metrics.CHAT_TIME_TO_FIRST_TOKEN.labels(model_id)
    between_tokens = metrics.CHAT_INTER_TOKEN_LATENCY.labels(model_id)
    last = time.perf_counter()
    first = True
    try:
        async with aclosing(events):
            async for event in events:
                now = time.perf_counter()
                if isinstance(event, Finish):
                    metrics.CHAT_PROMPT_TOKENS.labels(model_id).inc(event.prompt_tokens)
                    metrics.CHAT_COMPLETION_TOKENS.labels(model_id).inc(event.completion_tokens)
                else:
                    (time_to_first if first else between_tokens).observe(now - last)
                    first, last = False, now
                yield event
    except ApiError as error:
        metrics.BACKEND_ERRORS.labels(model_id, error.code or str(error.status)).inc()
        raise
    except Exception:
        metrics.BACKEND_ERRORS.labels(model_id, "server_error").inc()  # what the client is told (a bug)
        raise


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
        calls: list[ToolCall] = []
        while not isinstance(event, Finish):
            if isinstance(event, TextDelta):
                parts.append(event.text)
            else:
                calls.append(event)
            event = await anext(events)
        answer = "".join(parts)
        conversation = await self.on_finish(answer, calls, event)
        body = self._completion_object(answer, calls, event, conversation)
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
        calls: list[ToolCall] = []
        while not isinstance(event, Finish):
            if isinstance(event, ToolCall):
                # As OpenAI streams a call: its id and name first, then its arguments.
                index = len(calls)
                calls.append(event)
                call = {"index": index, "id": event.id, "type": "function",
                        "function": {"name": event.name, "arguments": ""}}
                opening = {} if role_sent else {"role": "assistant", "content": None, "refusal": None}
                yield chunk({**opening, "tool_calls": [call]}, None)
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": event.arguments_json}}]}, None)
                role_sent = True
            elif role_sent:
                answer.append(event.text)
                yield head + _dumps(event.text) + tail
            else:
                answer.append(event.text)
                yield chunk({"role": "assistant", "content": event.text, "refusal": None}, None)
                role_sent = True
            event = await anext(events)
        if not role_sent:
            yield chunk({"role": "assistant", "content": "", "refusal": None}, None)
        yield chunk({}, event.finish_reason)
        if include_usage:
            yield sse_event({**self._envelope("chat.completion.chunk"), "choices": [], "usage": _usage(event)})
        text = "".join(answer)
        conversation = await self.on_finish(text, calls, event)
        if conversation is not None:
            yield sse_event({**self._envelope("chat.completion.chunk"), "choices": [], "conversation": conversation})
        await self.keep(self._completion_object(text, calls, event, conversation))
        yield DONE

    def _completion_object(
        self, answer: str, calls: list[ToolCall], finish: Finish, conversation: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The `chat.completion` object: the non-stream reply, and what a stored completion keeps. With only tool
        calls, `content` is null, as in OpenAI's API."""
        message: dict[str, Any] = {"role": "assistant", "content": answer or (None if calls else ""), "refusal": None}
        if calls:
            message["tool_calls"] = [tool_call_object(call) for call in calls]
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish.finish_reason}
        body = {**self._envelope("chat.completion"), "choices": [choice], "usage": _usage(finish)}
        if conversation is not None:
            body["conversation"] = conversation
        return body
