"""Client of jan.llm.v1.LlmService: one streamed chat completion per orchestration step.

The request is OpenAI's chat-completions JSON in an HttpBody; the reply a stream of HttpBody pieces (SSE, since
every call here streams). An error before the first byte arrives as `x-http-status` initial metadata and a JSON
body, an error after it as an in-band `data: {"error": …}` event; both become ApiError.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.api import httpbody_pb2

from server.core.errors import ApiError
from server.core.rpc_client import CallerMetadata, error_from_json, error_from_rpc, sent_http_status
from server.gen.jan.llm.v1 import llm_pb2, llm_pb2_grpc


@dataclass
class TextDelta:
    text: str


@dataclass
class ToolCallDelta:
    """A piece of the tool call at `index`: its id and name come with the first piece, then argument text."""

    index: int
    call_id: str | None
    name: str | None
    arguments: str


@dataclass
class StepEnd:
    finish_reason: str
    usage: dict[str, int] = field(default_factory=dict)


ChatEvent = TextDelta | ToolCallDelta | StepEnd


class LlmClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = llm_pb2_grpc.LlmServiceStub(channel)

    async def check_model(self, model: str, caller: CallerMetadata) -> None:
        """Raises the service's own 404 (`param: model`) for a model it does not serve."""
        try:
            await self._stub.GetModel(llm_pb2.GetModelRequest(model=model), metadata=caller.grpc())
        except grpc.aio.AioRpcError as error:
            raise error_from_rpc(error) from None

    async def stream_chat(self, body: dict[str, Any], caller: CallerMetadata) -> AsyncIterator[ChatEvent]:
        """Streams one chat completion. Cancelling the consumer cancels the RPC, which stops the generation."""
        data = json.dumps({**body, "stream": True, "stream_options": {"include_usage": True}}).encode()
        request = llm_pb2.CreateChatCompletionRequest(
            body=httpbody_pb2.HttpBody(content_type="application/json", data=data)
        )
        call = self._stub.CreateChatCompletion(request, metadata=caller.grpc())
        finish: StepEnd | None = None
        usage: dict[str, int] = {}
        try:
            status = await sent_http_status(call)
            buffer = b""
            async for piece in call:
                if piece.body.content_type.startswith("application/json"):
                    raise error_from_json(status or 500, piece.body.data)
                buffer += piece.body.data
                *events, buffer = buffer.split(b"\n\n")
                for event in events:
                    chunk = _chunk(event)
                    if chunk is None:
                        continue
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or ():
                        delta = choice.get("delta") or {}
                        if delta.get("content"):
                            yield TextDelta(delta["content"])
                        for call_delta in delta.get("tool_calls") or ():
                            function = call_delta.get("function") or {}
                            yield ToolCallDelta(int(call_delta.get("index", 0)), call_delta.get("id"),
                                                function.get("name"), function.get("arguments") or "")
                        if choice.get("finish_reason"):
                            finish = StepEnd(choice["finish_reason"])
        except grpc.aio.AioRpcError as error:
            raise error_from_rpc(error) from None
        finally:
            call.cancel()
        if finish is None:
            raise ApiError(502, "The model's stream ended without a finish reason", code="model_error")
        finish.usage = usage
        yield finish


def _chunk(event: bytes) -> dict[str, Any] | None:
    """One SSE event's JSON (None for `[DONE]` and comments); an in-band error raises."""
    lines = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines or lines[0] == b"[DONE]":
        return None
    value = json.loads(b"\n".join(lines))
    if isinstance(value, dict) and "error" in value and "choices" not in value:
        raise error_from_json(500, json.dumps(value))
    return value if isinstance(value, dict) else None
