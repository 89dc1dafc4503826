"""OpenAI's typed Responses SSE events: `event: <type>\\ndata: <json>\\n\\n`, numbered by `sequence_number` from 0.

The orchestration emits every event whether or not the caller streams; a non-streaming response drops them, so the
loop has one code path.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any


def sse(event_type: str, payload: dict[str, Any]) -> bytes:
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event_type}\ndata: {data}\n\n".encode()


class EventStream:
    """Events of one response, queued for the streaming RPC that forwards them (or dropped when nobody streams)."""

    def __init__(self, streaming: bool) -> None:
        self._queue: asyncio.Queue[bytes | None] | None = asyncio.Queue() if streaming else None
        self._sequence = 0

    def emit(self, event_type: str, **fields: Any) -> None:
        if self._queue is None:
            return
        self._queue.put_nowait(sse(event_type, {"type": event_type, "sequence_number": self._sequence, **fields}))
        self._sequence += 1

    def close(self) -> None:
        if self._queue is not None:
            self._queue.put_nowait(None)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        assert self._queue is not None, "a non-streaming response has no events to read"
        while (event := await self._queue.get()) is not None:
            yield event
