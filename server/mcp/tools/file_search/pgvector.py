"""The PostgreSQL vector store with the pgvector extension. CI does not cover it (Debian bookworm has no
postgresql-15-pgvector package); the store and e2e tests passed by hand on PostgreSQL 16.2 + pgvector 0.6.2 from
the `pgserver` wheel (its binaries in place of the suite's PostgreSQL).

Vectors live in `file_search_vectors` (chunk_pk → file_search_chunks ON DELETE CASCADE), created here rather than in
the migration because the `vector` type exists only once the extension is installed, which may happen after the
schema was migrated; `prepare` then fills it from the stored chunks.

Searches are exact: the user's rows are found through the (user_id, document_pk) btree index and ordered by
pgvector's cosine distance `<=>`, computed in C. There is deliberately no HNSW/IVFFlat index: an approximate index
is scanned before the user_id filter applies, so it can return fewer than k of the user's chunks (pgvector 0.8's
iterative scans mitigate this); per-user exact scans stay fast at the sizes one user indexes.
"""

from __future__ import annotations

import logging

import numpy as np
from sqlalchemy import bindparam, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.mcp.tools.file_search.vector_store import DIMENSIONS, NearChunk, VectorStore

log = logging.getLogger(__name__)

_BACKFILL_BATCH = 500


async def install_pgvector(sessions: async_sessionmaker[AsyncSession]) -> bool:
    """Whether the `vector` extension is installed, installing it when the server has it and we may."""
    async with sessions() as session:
        if await session.scalar(text("SELECT 1 FROM pg_extension WHERE extname = 'vector'")):
            return True
        if not await session.scalar(text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")):
            return False
    try:
        async with sessions.begin() as session:
            await session.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
    except DBAPIError as error:  # e.g. not allowed to create extensions
        log.warning("file search: pgvector is available but CREATE EXTENSION vector failed: %s", error.orig)
        return False
    return True


def _vector_literal(vector: np.ndarray) -> str:
    """pgvector's text input format, '[x,y,...]'."""
    return "[" + ",".join(format(float(x), ".8g") for x in vector) + "]"


class PgVectorStore(VectorStore):
    name = "pgvector"

    async def prepare(self) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                text(
                    "CREATE TABLE IF NOT EXISTS file_search_vectors ("
                    "chunk_pk BIGINT PRIMARY KEY REFERENCES file_search_chunks(pk) ON DELETE CASCADE, "
                    "user_id VARCHAR(64) NOT NULL, document_pk BIGINT NOT NULL, "
                    f"embedding vector({DIMENSIONS}) NOT NULL)"
                )
            )
            await session.execute(
                text(
                    "CREATE INDEX IF NOT EXISTS ix_file_search_vectors_user_id_document_pk "
                    "ON file_search_vectors (user_id, document_pk)"
                )
            )
        # Chunks stored while pgvector was not installed (the exact store served them).
        added = 0
        while True:
            async with self._sessions.begin() as session:
                rows = (
                    await session.execute(
                        text(
                            "SELECT c.pk, c.user_id, c.document_pk, c.embedding FROM file_search_chunks c "
                            "WHERE NOT EXISTS (SELECT 1 FROM file_search_vectors v WHERE v.chunk_pk = c.pk) "
                            "LIMIT :batch"
                        ),
                        {"batch": _BACKFILL_BATCH},
                    )
                ).all()
                if not rows:
                    break
                await self._insert(
                    session,
                    [
                        (pk, user_id, document_pk, np.frombuffer(embedding, dtype=np.float32))
                        for pk, user_id, document_pk, embedding in rows
                    ],
                )
                added += len(rows)
        if added:
            log.info("file search: indexed %d stored chunks into pgvector", added)

    async def _add_vectors(
        self, session: AsyncSession, user_id: str, document_pk: int, chunk_pks: list[int], vectors: np.ndarray
    ) -> None:
        await self._insert(session, [(pk, user_id, document_pk, vectors[i]) for i, pk in enumerate(chunk_pks)])

    @staticmethod
    async def _insert(session: AsyncSession, rows: list[tuple[int, str, int, np.ndarray]]) -> None:
        if not rows:
            return
        await session.execute(
            text(
                "INSERT INTO file_search_vectors (chunk_pk, user_id, document_pk, embedding) "
                "VALUES (:chunk_pk, :user_id, :document_pk, CAST(:embedding AS vector))"
            ),
            [
                {"chunk_pk": pk, "user_id": user_id, "document_pk": document_pk, "embedding": _vector_literal(vector)}
                for pk, user_id, document_pk, vector in rows
            ],
        )

    async def _nearest_chunks(
        self, session: AsyncSession, user_id: str, vector: np.ndarray, limit: int, document_pks: list[int] | None
    ) -> list[NearChunk]:
        document_filter = " AND document_pk IN :document_pks" if document_pks is not None else ""
        statement = text(
            "SELECT chunk_pk, document_pk, 1 - (embedding <=> CAST(:embedding AS vector)) AS score "
            f"FROM file_search_vectors WHERE user_id = :user_id{document_filter} "
            "ORDER BY embedding <=> CAST(:embedding AS vector) LIMIT :limit"
        )
        parameters: dict[str, object] = {"embedding": _vector_literal(vector), "user_id": user_id, "limit": limit}
        if document_pks is not None:
            statement = statement.bindparams(bindparam("document_pks", expanding=True))
            parameters["document_pks"] = document_pks
        rows = await session.execute(statement, parameters)
        return [NearChunk(chunk_pk, document_pk, float(score)) for chunk_pk, document_pk, score in rows]
