"""The models this server can run, each served by one inference backend."""

from __future__ import annotations

import asyncio
import logging
import os

from server.core.config import ModelSettings
from server.core.errors import model_not_found, unavailable
from server.llm.backends.base import InferenceBackend
from server.llm.cpu_budget import ThreadBudget

log = logging.getLogger(__name__)


def create_backend(settings: ModelSettings, budget: ThreadBudget) -> InferenceBackend:
    if settings.backend == "llamacpp":
        from server.llm.backends.llamacpp import LlamaCppBackend

        # The GGUF's mtime is a creation time that stays stable across restarts.
        created = int(os.stat(settings.path).st_mtime) if os.path.exists(settings.path) else 0
        return LlamaCppBackend(settings, created=created, budget=budget)
    if settings.backend == "openai":
        from server.llm.backends.openai_upstream import OpenAIUpstreamBackend

        return OpenAIUpstreamBackend(settings)
    if settings.backend == "triton":
        from server.llm.backends.triton import TritonBackend

        return TritonBackend(settings)
    raise ValueError(f"unknown backend {settings.backend!r}")


class ModelRegistry:
    """Routes a model id to its backend. A model that fails to load is reported, not fatal: the others serve."""

    def __init__(self, backends: list[InferenceBackend]) -> None:
        self._backends = {backend.info.model_id: backend for backend in backends}
        self._load_failures: dict[str, str] = {}

    @classmethod
    def from_settings(cls, models: list[ModelSettings], budget: ThreadBudget) -> ModelRegistry:
        """`budget`: the process's CPU threads, which the models share with each other and the embedder."""
        return cls([create_backend(model, budget) for model in models])

    def get(self, model_id: str) -> InferenceBackend:
        backend = self._backends.get(model_id)
        if backend is None:
            raise model_not_found(model_id)
        if model_id in self._load_failures:
            raise unavailable(f"The model '{model_id}' is unavailable: {self._load_failures[model_id]}")
        return backend

    def backend(self, model_id: str) -> InferenceBackend:
        """The model's backend, loaded or not (KeyError for an unknown id)."""
        return self._backends[model_id]

    def readiness_problem(self) -> str | None:
        if self._load_failures:
            return "; ".join(f"model '{m}' failed to load: {why}" for m, why in sorted(self._load_failures.items()))
        loading = [model_id for model_id, backend in self._backends.items() if not backend.ready]
        # Loading (llamacpp), or their inference server reports them down (triton).
        return f"models not ready: {', '.join(sorted(loading))}" if loading else None

    async def start(self) -> None:
        async def load(model_id: str, backend: InferenceBackend) -> None:
            try:
                await backend.start()
            except Exception as error:
                log.error("model %s failed to load: %s", model_id, error)
                self._load_failures[model_id] = str(error) or error.__class__.__name__

        await asyncio.gather(*(load(model_id, backend) for model_id, backend in self._backends.items()))

    async def close(self) -> None:
        await asyncio.gather(*(backend.close() for backend in self._backends.values()))
