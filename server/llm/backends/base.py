"""The one interface every inference backend implements (llama.cpp here; Triton over gRPC later).

A backend turns a list of chat messages plus sampling parameters into a stream of text deltas ending in one
Finish event. It owns its concurrency (instances, queueing) and must never block the event loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class ChatMessage:
    """One message of the prompt. `developer` messages arrive here as `system`."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    name: str | None = None
    tool_call_id: str | None = None


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int | None = None  # None: until end of sequence or the context is full
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    json_schema: dict[str, Any] | None = None  # output must validate against this JSON schema
    json_object: bool = False  # output must be a JSON object (any shape)


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class Finish:
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int


GenerationEvent = TextDelta | Finish


@dataclass
class BackendInfo:
    model_id: str
    owned_by: str
    created: int
    context_size: int
    extra: dict[str, Any] = field(default_factory=dict)


class InferenceBackend(ABC):
    """A loaded model that generates chat completions.

    `history` marks stored conversation messages (`messages[history.start:history.stop]`): when the prompt does
    not fit the context, the backend drops them oldest-first rather than failing.
    `generate` raises server.core.errors.ApiError for what the client should see: 429 `server_busy` when its
    wait queue is full, 400 `context_length_exceeded` when the prompt does not fit, 503 when the backend is down
    (`server_shutting_down` for generations that close() ended).
    When the consumer stops iterating (aclose or cancellation), generation stops within a second and the
    capacity is released.
    """

    info: BackendInfo

    @abstractmethod
    async def start(self) -> None:
        """Loads the model; returns when it can serve."""

    @abstractmethod
    async def close(self) -> None:
        """Stops generation and frees the model."""

    @property
    @abstractmethod
    def ready(self) -> bool: ...

    @abstractmethod
    def generate(
        self, messages: list[ChatMessage], params: SamplingParams, history: range = range(0)
    ) -> AsyncGenerator[GenerationEvent, None]:
        """Streams TextDelta events, then exactly one Finish."""
