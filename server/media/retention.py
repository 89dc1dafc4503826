"""The retention sweep: a background task that deletes expired media every `interval` seconds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

log = logging.getLogger(__name__)


class Sweepable(Protocol):
    async def sweep_once(self) -> int: ...


class RetentionSweep:
    def __init__(self, target: Sweepable, interval_seconds: float) -> None:
        self._target = target
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="media-retention-sweep")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                deleted = await self._target.sweep_once()
                if deleted:
                    log.info("media retention sweep deleted %d expired media objects", deleted)
            except Exception:  # a failed sweep (database or storage down) is retried at the next interval
                log.exception("media retention sweep failed")
            await asyncio.sleep(self._interval)
