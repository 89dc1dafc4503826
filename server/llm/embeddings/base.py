"""The interface the embeddings endpoint and the vector store depend on; MiniLMEmbedder is the one implementation."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from server.core.errors import ApiError, unavailable


@dataclass(frozen=True)
class Embeddings:
    """Vectors and what they cost: `token_counts[i]` is the tokens read of text i (after truncation)."""

    vectors: np.ndarray
    token_counts: list[int]


class Embedder(ABC):
    """Turns texts into unit-length float32 vectors, so a dot product is the cosine similarity.

    Each text is read up to `max_tokens` model tokens (special tokens included); the rest is silently ignored,
    as sentence-transformers does. Callers that must not lose text (chunkers) keep pieces within `max_tokens`
    using `count_tokens`.
    """

    model_id: str
    dimensions: int
    max_tokens: int

    @abstractmethod
    def unavailable_reason(self) -> str | None:
        """None once the model is loaded; otherwise why it cannot embed (still loading, or the load error)."""

    async def embed(self, texts: list[str]) -> np.ndarray:
        """float32 array of shape (len(texts), dimensions), each row L2-normalized; computed off the event loop.

        Raises `EmbedderUnavailable` (a 503 ApiError) when `unavailable_reason()` is not None.
        """
        return (await self.embed_with_token_counts(texts)).vectors

    @abstractmethod
    async def embed_with_token_counts(self, texts: list[str]) -> Embeddings:
        """`embed`, plus the tokens read per text (the usage the embeddings endpoint reports)."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Model tokens of `text` before truncation, [CLS] and [SEP] included: it fits whole iff ≤ max_tokens.

        The tokenizer alone, on the caller's thread: about 0.2 ms per 100 tokens. Raises `EmbedderUnavailable`
        like `embed`."""


class EmbedderUnavailable(ApiError):
    """The embedding model did not load (or has not yet): callers answer 503 / tool unavailable."""

    def __init__(self, reason: str) -> None:
        error = unavailable(f"The embedding model is unavailable: {reason}")
        super().__init__(error.status, error.message, code=error.code)
        self.reason = reason
