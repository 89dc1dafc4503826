"""The responses this process is producing right now, so that cancel (and delete) can stop them.

Every response runs as an asyncio task registered here, background or not: a background one outlives the request
that created it; a foreground one is cancelled when its client goes away. Cancelling the task cancels the gRPC chat
stream it is reading, which stops the generation in the model server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

CANCEL_WAIT_SECONDS = 10.0


class RunningResponses:
    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[Any]] = {}

    def start(self, response_id: str, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(work, name=f"response {response_id}")
        self._tasks[response_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(response_id, None))
        return task

    def is_running(self, response_id: str) -> bool:
        return response_id in self._tasks

    async def cancel(self, response_id: str) -> bool:
        """Stops the response and waits until it has recorded that; False if it was not running here."""
        task = self._tasks.get(response_id)
        if task is None:
            return False
        task.cancel()
        await asyncio.wait({task}, timeout=CANCEL_WAIT_SECONDS)
        return True

    def __len__(self) -> int:
        return len(self._tasks)
