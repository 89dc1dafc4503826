"""The vector store interface, its shared document bookkeeping, and the exact (brute-force numpy) implementation.

Every implementation keeps documents and chunks in the same tables (store.py) and differs only in how it finds the
chunks nearest to a query vector: sqlite-vec's vec0 table on SQLite, pgvector on PostgreSQL when the extension is
installed, or cosine over the user's chunks in numpy (the fallback on PostgreSQL without pgvector). All of them
scan a user's vectors exhaustively, so results are exact on every backend.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.core.db import utcnow
from server.mcp.tools.file_search.store import FileSearchChunk, FileSearchDocument

# all-MiniLM-L6-v2's output size; the vec0 and pgvector columns are declared with it.
DIMENSIONS = 384
# Above this many vectors, numpy scoring moves to a worker thread so the event loop stays responsive.
_INLINE_SCORING_LIMIT = 2_000


@dataclass(frozen=True)
class IndexedDocument:
    document_id: str
    indexed_at: datetime
    token_count: int
    chunks: int


@dataclass(frozen=True)
class DocumentMatch:
    """A document and its chunk nearest to the query."""

    document_id: str
    score: float
    chunk_text: str
    metadata: dict[str, Any]
    tags: list[str]


@dataclass(frozen=True)
class NearChunk:
    chunk_pk: int
    document_pk: int
    score: float  # cosine similarity, 1 = same direction


class VectorStore(ABC):
    """Documents with embedded chunks, private per user: nothing reads or replaces another user's rows."""

    name: str

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    @abstractmethod
    async def prepare(self) -> None:
        """Creates the index structures this backend needs and brings them in line with the stored chunks."""

    async def replace_document(
        self,
        user_id: str,
        document_id: str,
        *,
        metadata: dict[str, Any],
        tags: list[str],
        token_count: int,
        chunks: list[str],
        embeddings: np.ndarray,
    ) -> IndexedDocument:
        """Stores the document, replacing the user's document of the same id in the same transaction, so a query
        sees the old version or the new one, never a mix."""
        vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
        if vectors.shape != (len(chunks), DIMENSIONS):
            raise ValueError(f"expected {len(chunks)} embeddings of {DIMENSIONS} dimensions, got {vectors.shape}")
        async with self._sessions.begin() as session:
            await self._delete_document(session, user_id, document_id)
            document = FileSearchDocument(
                user_id=user_id,
                document_id=document_id,
                document_metadata=metadata,
                tags=tags,
                token_count=token_count,
                chunk_count=len(chunks),
                indexed_at=utcnow(),
            )
            session.add(document)
            await session.flush()
            rows = [
                FileSearchChunk(
                    document_pk=document.pk, user_id=user_id, position=i, text=text, embedding=vectors[i].tobytes()
                )
                for i, text in enumerate(chunks)
            ]
            session.add_all(rows)
            await session.flush()
            await self._add_vectors(session, user_id, document.pk, [row.pk for row in rows], vectors)
            return IndexedDocument(document_id, document.indexed_at, token_count, len(chunks))

    async def search(
        self, user_id: str, query: np.ndarray, top_k: int, document_ids: list[str] | None
    ) -> list[DocumentMatch]:
        """The user's `top_k` documents most similar to `query`, best first, each scored by its nearest chunk.
        `document_ids` (when given) limits the search to those of the user's documents."""
        vector = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        async with self._sessions() as session:
            document_pks: list[int] | None = None
            if document_ids is not None:
                document_pks = list(
                    await session.scalars(
                        select(FileSearchDocument.pk).where(
                            FileSearchDocument.user_id == user_id, FileSearchDocument.document_id.in_(document_ids)
                        )
                    )
                )
                if not document_pks:
                    return []
            best = await self._best_chunk_per_document(session, user_id, vector, top_k, document_pks)
            return await _load_matches(session, user_id, best)

    async def _best_chunk_per_document(
        self, session: AsyncSession, user_id: str, vector: np.ndarray, top_k: int, document_pks: list[int] | None
    ) -> list[NearChunk]:
        # Several of the nearest chunks may belong to one document: widen the search until `top_k` documents
        # are found or every chunk was considered.
        limit = top_k * 4
        while True:
            nearest = await self._nearest_chunks(session, user_id, vector, limit, document_pks)
            best: dict[int, NearChunk] = {}
            for chunk in nearest:
                best.setdefault(chunk.document_pk, chunk)
            if len(best) >= top_k or len(nearest) < limit:
                return list(best.values())[:top_k]
            limit *= 4

    @abstractmethod
    async def _add_vectors(
        self, session: AsyncSession, user_id: str, document_pk: int, chunk_pks: list[int], vectors: np.ndarray
    ) -> None:
        """Indexes new chunks (their rows are already in file_search_chunks), in the caller's transaction."""

    async def _delete_document(self, session: AsyncSession, user_id: str, document_id: str) -> None:
        """Deletes the user's document of this id, if any, with its chunks (ON DELETE CASCADE) and whatever
        cascades from them. Document row first, then chunks: concurrent replacements on PostgreSQL lock rows in
        that one order, so they queue instead of deadlocking."""
        await session.execute(
            delete(FileSearchDocument)
            .where(FileSearchDocument.user_id == user_id, FileSearchDocument.document_id == document_id)
            .execution_options(synchronize_session=False)
        )

    @abstractmethod
    async def _nearest_chunks(
        self, session: AsyncSession, user_id: str, vector: np.ndarray, limit: int, document_pks: list[int] | None
    ) -> list[NearChunk]:
        """The user's `limit` chunks nearest to `vector` (restricted to `document_pks` when given), best first."""


class ExactVectorStore(VectorStore):
    """Cosine similarity in numpy over every chunk of the user, loaded from file_search_chunks per query."""

    name = "exact"

    async def prepare(self) -> None:
        return None  # the chunks table is the whole index

    async def _add_vectors(
        self, session: AsyncSession, user_id: str, document_pk: int, chunk_pks: list[int], vectors: np.ndarray
    ) -> None:
        return None

    async def _nearest_chunks(
        self, session: AsyncSession, user_id: str, vector: np.ndarray, limit: int, document_pks: list[int] | None
    ) -> list[NearChunk]:
        statement = select(FileSearchChunk.pk, FileSearchChunk.document_pk, FileSearchChunk.embedding).where(
            FileSearchChunk.user_id == user_id
        )
        if document_pks is not None:
            statement = statement.where(FileSearchChunk.document_pk.in_(document_pks))
        rows = (await session.execute(statement)).all()
        if not rows:
            return []
        if len(rows) > _INLINE_SCORING_LIMIT:
            order, scores = await asyncio.to_thread(_rank, [row[2] for row in rows], vector, limit)
        else:
            order, scores = _rank([row[2] for row in rows], vector, limit)
        return [NearChunk(rows[i][0], rows[i][1], float(score)) for i, score in zip(order, scores, strict=True)]


def _rank(embeddings: list[bytes], vector: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the `limit` best rows by dot product (= cosine: all vectors are unit length), best first."""
    matrix = np.frombuffer(b"".join(embeddings), dtype=np.float32).reshape(len(embeddings), -1)
    scores = matrix @ vector
    if limit < len(scores):
        top = np.argpartition(-scores, limit - 1)[:limit]
    else:
        top = np.arange(len(scores))
    order = top[np.argsort(-scores[top], kind="stable")]
    return order, scores[order]


async def _load_matches(session: AsyncSession, user_id: str, best: list[NearChunk]) -> list[DocumentMatch]:
    """The documents and chunk texts of `best`, in its order; rows gone since the index was read are skipped."""
    if not best:
        return []
    rows = await session.execute(
        select(FileSearchChunk.pk, FileSearchChunk.text, FileSearchDocument)
        .join(FileSearchDocument, FileSearchDocument.pk == FileSearchChunk.document_pk)
        .where(FileSearchChunk.pk.in_([chunk.chunk_pk for chunk in best]), FileSearchDocument.user_id == user_id)
    )
    found = {chunk_pk: (text, document) for chunk_pk, text, document in rows}
    matches = []
    for chunk in best:
        if chunk.chunk_pk in found:
            text, document = found[chunk.chunk_pk]
            matches.append(
                DocumentMatch(document.document_id, chunk.score, text, document.document_metadata, document.tags)
            )
    return matches
