"""The `file_search_index` and `file_search_query` tools (the original's names, arguments and payloads), on real
sentence embeddings (all-MiniLM-L6-v2) and a vector store in the server's own database.

Documents are private: every read and write is scoped to the calling user, and two users may index the same
document_id without touching each other's document.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.core.config import Settings
from server.llm.embeddings import Embedder, EmbedderUnavailable
from server.mcp.tools.base import Tool, ToolContext, ToolError
from server.mcp.tools.file_search.chunking import chunk_text
from server.mcp.tools.file_search.selection import open_vector_store
from server.mcp.tools.file_search.vector_store import VectorStore

DOCUMENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}$"
MAX_TOP_K = 20
DEFAULT_TOP_K = 5
MAX_TAG_CHARS = 64

_DOCUMENT_ID_SCHEMA = {
    "type": "string",
    "pattern": DOCUMENT_ID_PATTERN,
    "description": "Your id for the document (1-128 characters: letters, digits and . _ : @ / + = -). "
    "Indexing an id you already used replaces that document.",
}


class FileSearch:
    """What both tools share: the embedder, the chunking settings, and the vector store, opened on first use
    (the database and the sqlite-vec/pgvector choice are only known once the server runs)."""

    def __init__(
        self, settings: Settings, sessions: async_sessionmaker[AsyncSession], embedder: Embedder | None
    ) -> None:
        self.settings = settings
        self.embedder = embedder
        self._sessions = sessions
        self._store: VectorStore | None = None
        self._opening = asyncio.Lock()

    def unavailable_reason(self) -> str | None:
        if self.embedder is None:
            return "no embedding model is configured"
        reason = self.embedder.unavailable_reason()
        return None if reason is None else f"the embedding model is unavailable: {reason}"

    async def store(self) -> VectorStore:
        async with self._opening:
            if self._store is None:
                try:
                    self._store = await open_vector_store(self.settings.file_search_vector_store, self._sessions)
                except RuntimeError as error:  # a store setting this database cannot run
                    raise ToolError(f"file search is unavailable: {error}") from None
            return self._store

    async def embed(self, texts: list[str]) -> Any:
        if self.embedder is None:
            raise ToolError("file search is unavailable: no embedding model is configured")
        try:
            return await self.embedder.embed(texts)
        except EmbedderUnavailable as error:
            raise ToolError(f"file search is unavailable: the embedding model is unavailable: {error.reason}") from None


class FileSearchIndexTool(Tool):
    name = "file_search_index"

    def __init__(self, search: FileSearch) -> None:
        self._search = search
        settings = search.settings
        self.description = (
            "Index a text document for semantic search with file_search_query. The text is split into overlapping "
            f"chunks of about {settings.file_search_chunk_tokens} tokens, each embedded with all-MiniLM-L6-v2. "
            "Re-indexing a document_id replaces the earlier version. Documents are private to you."
        )
        self.input_schema = {
            "type": "object",
            "properties": {
                "document_id": _DOCUMENT_ID_SCHEMA,
                "text": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": settings.file_search_max_text_chars,
                    "description": f"The document's text (at most {settings.file_search_max_text_chars} characters).",
                },
                "metadata": {
                    "type": "object",
                    "description": "Any JSON object, returned with the document's search results.",
                },
                "tags": {
                    "type": "array",
                    "items": {"type": "string", "minLength": 1, "maxLength": MAX_TAG_CHARS},
                    "maxItems": settings.file_search_max_tags,
                    "description": f"Labels returned with search results (at most {settings.file_search_max_tags}).",
                },
            },
            "required": ["document_id", "text"],
            "additionalProperties": False,
        }
        self.output_schema = {
            "type": "object",
            "properties": {
                "document_id": {"type": "string"},
                "status": {"type": "string", "enum": ["indexed"]},
                "indexed_at": {"type": "string", "description": "RFC 3339 UTC time"},
                "token_count": {"type": "integer", "description": "model tokens in the text"},
                "chunks": {"type": "integer", "description": "chunks the text was split into"},
            },
            "required": ["document_id", "status", "indexed_at", "token_count", "chunks"],
        }

    def unavailable_reason(self) -> str | None:
        return self._search.unavailable_reason()

    async def call(self, context: ToolContext, arguments: dict[str, Any]) -> dict[str, Any]:
        settings = self._search.settings
        document_id: str = arguments["document_id"]
        text: str = arguments["text"]
        if not text.strip():
            raise ToolError("text is empty: nothing to index")
        embedder = self._search.embedder
        if embedder is None:
            raise ToolError("file search is unavailable: no embedding model is configured")
        store = await self._search.store()
        chunk_tokens = min(settings.file_search_chunk_tokens, embedder.max_tokens)
        overlap_tokens = min(settings.file_search_chunk_overlap_tokens, chunk_tokens // 2)
        # Tokenizing a long text takes tens of milliseconds: off the event loop.
        chunks = await asyncio.to_thread(chunk_text, text, embedder.count_tokens, chunk_tokens, overlap_tokens)
        token_count = await asyncio.to_thread(embedder.count_tokens, text)
        embeddings = await self._search.embed(chunks)
        replace = {
            "metadata": arguments.get("metadata") or {},
            "tags": list(dict.fromkeys(arguments.get("tags") or [])),
            "token_count": max(0, token_count - 2),  # without [CLS] and [SEP]
            "chunks": chunks,
            "embeddings": embeddings,
        }
        try:
            indexed = await store.replace_document(context.user_id, document_id, **replace)
        except IntegrityError:
            # A concurrent call indexed the same document_id between our delete and insert: last writer wins.
            indexed = await store.replace_document(context.user_id, document_id, **replace)
        return {
            "document_id": indexed.document_id,
            "status": "indexed",
            "indexed_at": indexed.indexed_at.isoformat().replace("+00:00", "Z"),
            "token_count": indexed.token_count,
            "chunks": indexed.chunks,
        }


class FileSearchQueryTool(Tool):
    name = "file_search_query"
    description = (
        "Semantic search over the documents you indexed with file_search_index. Returns up to top_k documents, "
        "best first; each result is one document, scored by the cosine similarity (-1..1) of its chunk closest to "
        "the query, with that whole chunk (a passage of a few sentences) as text_preview."
    )

    def __init__(self, search: FileSearch) -> None:
        self._search = search
        self.input_schema = {
            "type": "object",
            "properties": {
                "query": {"type": "string", "minLength": 1, "maxLength": 10_000, "description": "What to look for."},
                "top_k": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_TOP_K,
                    "default": DEFAULT_TOP_K,
                    "description": f"How many documents to return (1-{MAX_TOP_K}, default {DEFAULT_TOP_K}).",
                },
                "document_ids": {
                    "type": "array",
                    "items": {"type": "string"},
                    "maxItems": 1000,
                    "description": "Search only these of your documents.",
                },
            },
            "required": ["query"],
            "additionalProperties": False,
        }
        self.output_schema = {
            "type": "object",
            "properties": {
                "query": {"type": "string"},
                "top_k": {"type": "integer"},
                "count": {"type": "integer"},
                "results": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "document_id": {"type": "string"},
                            "score": {"type": "number", "description": "cosine similarity of the best chunk"},
                            "text_preview": {
                                "type": "string",
                                "description": "the text of the document's chunk nearest to the query (whole)",
                            },
                            "metadata": {"type": "object"},
                            "tags": {"type": "array", "items": {"type": "string"}},
                        },
                        "required": ["document_id", "score", "text_preview", "metadata", "tags"],
                    },
                },
            },
            "required": ["query", "top_k", "count", "results"],
        }

    def unavailable_reason(self) -> str | None:
        return self._search.unavailable_reason()

    async def call(self, context: ToolContext, arguments: dict[str, Any]) -> dict[str, Any]:
        query: str = arguments["query"]
        top_k: int = arguments.get("top_k", DEFAULT_TOP_K)
        document_ids: list[str] | None = arguments.get("document_ids")
        if not query.strip():
            raise ToolError("query is empty")
        store = await self._search.store()
        vectors = await self._search.embed([query])
        matches = await store.search(context.user_id, vectors[0], top_k, document_ids)
        results = [
            {
                "document_id": match.document_id,
                "score": round(match.score, 6),
                "text_preview": match.chunk_text,  # a chunk is at most file_search_chunk_tokens long
                "metadata": match.metadata,
                "tags": match.tags,
            }
            for match in matches
        ]
        return {"query": query, "top_k": top_k, "count": len(results), "results": results}


def file_search_tools(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], embedder: Embedder | None
) -> list[Tool]:
    search = FileSearch(settings, sessions, embedder)
    return [FileSearchIndexTool(search), FileSearchQueryTool(search)]
