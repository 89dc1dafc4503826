"""The CPU threads this process computes with, shared by whatever is computing right now: llama.cpp instances
generating and embedding batches. On 2 cores two busy users of both cores slow each other far more than their
fair share (llama.cpp's OpenMP barriers spin while another thread holds a core: chat fell from 110 to 12-30 tok/s
beside 1-2 embedding threads), so each user takes an equal share while others are active, and all when alone."""

from __future__ import annotations

import threading


class ThreadBudget:
    """`total` CPU threads shared by the computations in progress. Thread-safe."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._active = 0
        self._lock = threading.Lock()

    @property
    def active(self) -> int:
        """Computations (llama.cpp generations, embedding batches) running right now."""
        return self._active

    def enter(self) -> None:
        with self._lock:
            self._active += 1

    def leave(self) -> None:
        with self._lock:
            self._active -= 1

    def share(self, max_threads: int) -> int:
        """Threads for one active computation now: an equal share of the budget, within [1, max_threads]."""
        return max(1, min(max_threads, self.total // max(1, self._active)))
