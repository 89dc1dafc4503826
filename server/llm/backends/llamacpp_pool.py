"""Capacity of the llama.cpp backend: the pool of model instances requests wait for, and the CPU threads the
instances that are generating share."""

from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import llama_cpp

from server.core.errors import server_busy, shutting_down
from server.core.observability.metrics import MODEL_QUEUE_DEPTH, MODEL_REJECTIONS
from server.llm.cpu_budget import ThreadBudget


@dataclass
class Instance:
    """One `Llama` and the single thread that ever drives it. OpenMP keeps a thread team per calling thread:
    a second caller thread's team would push the process over libgomp's thread count and slow every decode
    (measured: 111 → 77 tok/s at n_threads=2 on 2 cores; see thread_caps)."""

    index: int  # lower indexes have higher caps and are handed out first
    llm: llama_cpp.Llama
    thread: ThreadPoolExecutor
    max_threads: int  # its cap: see thread_caps
    threads: int  # what llama.cpp is set to use for this instance's next decode


def thread_caps(budget: int, pool_size: int, cpus: int) -> list[int]:
    """The most threads each instance may ever use.

    libgomp (llama.cpp's OpenMP) keeps each calling thread's team for good. Once a process holds more OpenMP
    threads than CPUs (the process's first thread plus every team's helpers), every barrier, and ggml has one
    after each op, spins ~100 times instead of ~300,000 before sleeping in the kernel: decoding on 2 cores fell
    from 125 to 80 tok/s once both instances had ever used 2 threads. So the caps add up to at most
    min(budget, cpus) - 1 helper threads, dealt round-robin from the first instance: with 2 cores and 2 instances,
    instance 0 may use 2 threads and instance 1 only 1.
    """
    caps = [1] * pool_size
    for helper in range(max(0, min(budget, cpus) - 1)):
        caps[helper % pool_size] += 1
    return caps


def fit_threads(budget: ThreadBudget, instance: Instance) -> None:
    """Called by the instance's worker thread before each llama.cpp step; a no-op unless its share moved.
    A lowered count takes effect at the instance's next token (within ~10 ms)."""
    threads = budget.share(instance.max_threads)
    if threads != instance.threads:
        llama_cpp.llama_set_n_threads(instance.llm.ctx, threads, threads)
        instance.threads = threads


class InstancePool:
    """Hands idle model instances to requests in arrival order; at most `queue_size` requests may wait."""

    def __init__(self, model_id: str, queue_size: int) -> None:
        self._model_id = model_id
        self._queue_size = queue_size
        self._idle: list[Instance] = []
        self._waiters: deque[asyncio.Future[Instance]] = deque()
        self._closed = False
        # Read when Prometheus scrapes: nothing to update on the request path.
        MODEL_QUEUE_DEPTH.labels(model_id).set_function(lambda: len(self._waiters))

    async def acquire(self) -> Instance:
        if self._closed:
            raise shutting_down()
        if self._idle:
            # The idle instance with the highest thread cap: a lone request gets the most threads (and, as
            # requests mostly come one at a time, the same instance, whose KV cache holds the last prompt).
            instance = min(self._idle, key=lambda idle: idle.index)
            self._idle.remove(instance)
            return instance
        if len(self._waiters) >= self._queue_size:
            MODEL_REJECTIONS.labels(self._model_id).inc()
            raise server_busy(
                f"The model '{self._model_id}' is busy: all its instances are generating and "
                f"{self._queue_size} requests are already waiting. Retry shortly."
            )
        waiter: asyncio.Future[Instance] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            # Handed an instance in the same loop turn as the cancellation: pass it on.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release(waiter.result())
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def release(self, instance: Instance) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(instance)
                return
        self._idle.append(instance)

    def close(self) -> None:
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(shutting_down())
