"""Sentence embeddings: the `Embedder` interface, the all-MiniLM-L6-v2 implementation and `POST /v1/embeddings`."""

from server.llm.embeddings.base import Embedder, EmbedderUnavailable, Embeddings
from server.llm.embeddings.minilm import MiniLMEmbedder, bundled_minilm_path

__all__ = ["Embedder", "EmbedderUnavailable", "Embeddings", "MiniLMEmbedder", "bundled_minilm_path"]
