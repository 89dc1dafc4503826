"""The SQLite vector store: sqlite-vec's `vec0` virtual table, partitioned by user.

Loading the extension: the Python this project runs on may be built without `enable_load_extension` (pyenv's
default is), so sqlite-vec is registered with SQLite's own `sqlite3_auto_extension`, which initializes it in every
SQLite connection the process opens afterwards. The function is looked up through the `_sqlite3` module, so it is
the SQLite library that module really uses (shared or statically linked).

`vec0` is created here rather than in the migration: a virtual table can only be created (or dropped) by a
connection that has the module, and Alembic's connection may predate the registration. Its rows are derived from
file_search_chunks (rowid = chunk pk), so `prepare` fills in whatever is missing and drops orphans.
"""

from __future__ import annotations

import _sqlite3
import ctypes
import glob
import logging
import threading

import numpy as np
import sqlite_vec
from sqlalchemy import bindparam, delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from server.mcp.tools.file_search.store import FileSearchChunk, FileSearchDocument
from server.mcp.tools.file_search.vector_store import DIMENSIONS, NearChunk, VectorStore

log = logging.getLogger(__name__)

# vec0 answers at most this many neighbours per KNN query.
_MAX_K = 4096
_registered = False
_register_lock = threading.Lock()


def enable_sqlite_vec() -> None:
    """Makes every SQLite connection opened from now on in this process load sqlite-vec (idempotent).

    Raises OSError when the extension or the registration function cannot be found."""
    global _registered
    with _register_lock:
        if _registered:
            return
        sqlite_library = ctypes.CDLL(_sqlite3.__file__)
        # loadable_path() has no suffix: vec0.so, vec0.dylib or vec0.dll depending on the wheel's platform.
        extension = ctypes.CDLL(next(iter(glob.glob(sqlite_vec.loadable_path() + ".*")), "vec0"))
        register = sqlite_library.sqlite3_auto_extension
        register.argtypes = [ctypes.c_void_p]
        register.restype = ctypes.c_int
        if register(ctypes.cast(extension.sqlite3_vec_init, ctypes.c_void_p)) != 0:
            raise OSError("sqlite3_auto_extension refused sqlite-vec")
        _registered = True


class SqliteVecStore(VectorStore):
    name = "sqlite-vec"

    async def prepare(self) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                text(
                    "CREATE VIRTUAL TABLE IF NOT EXISTS file_search_vectors USING vec0("
                    "user_id TEXT PARTITION KEY, document_pk INTEGER, "
                    f"embedding FLOAT[{DIMENSIONS}] DISTANCE_METRIC=cosine)"
                )
            )
            # Chunks of users deleted since (ON DELETE CASCADE cannot reach a virtual table).
            await session.execute(
                text("DELETE FROM file_search_vectors WHERE rowid NOT IN (SELECT pk FROM file_search_chunks)")
            )
            added = await session.execute(
                text(
                    "INSERT INTO file_search_vectors(rowid, user_id, document_pk, embedding) "
                    "SELECT pk, user_id, document_pk, embedding FROM file_search_chunks "
                    "WHERE pk NOT IN (SELECT rowid FROM file_search_vectors)"
                )
            )
            if added.rowcount:  # type: ignore[attr-defined]
                log.info("file search: indexed %d stored chunks into sqlite-vec", added.rowcount)  # type: ignore[attr-defined]

    async def _add_vectors(
        self, session: AsyncSession, user_id: str, document_pk: int, chunk_pks: list[int], vectors: np.ndarray
    ) -> None:
        if not chunk_pks:
            return
        await session.execute(
            text(
                "INSERT INTO file_search_vectors(rowid, user_id, document_pk, embedding) "
                "VALUES (:rowid, :user_id, :document_pk, :embedding)"
            ),
            [
                {"rowid": pk, "user_id": user_id, "document_pk": document_pk, "embedding": vectors[i].tobytes()}
                for i, pk in enumerate(chunk_pks)
            ],
        )

    async def _delete_document(self, session: AsyncSession, user_id: str, document_id: str) -> None:
        # No cascade reaches vec0, and it can only find rows fast by rowid: delete the chunks first to learn their
        # pks. The first statement is a write, so the transaction holds SQLite's write lock from the start (a
        # transaction that starts with a read can't always upgrade), and writers never interleave.
        old_document = select(FileSearchDocument.pk).where(
            FileSearchDocument.user_id == user_id, FileSearchDocument.document_id == document_id
        )
        chunk_pks = list(
            await session.scalars(
                delete(FileSearchChunk)
                .where(FileSearchChunk.user_id == user_id, FileSearchChunk.document_pk.in_(old_document))
                .returning(FileSearchChunk.pk)
                .execution_options(synchronize_session=False)
            )
        )
        if chunk_pks:
            await session.execute(
                text("DELETE FROM file_search_vectors WHERE rowid = :rowid"), [{"rowid": pk} for pk in chunk_pks]
            )
        await super()._delete_document(session, user_id, document_id)

    async def _nearest_chunks(
        self, session: AsyncSession, user_id: str, vector: np.ndarray, limit: int, document_pks: list[int] | None
    ) -> list[NearChunk]:
        document_filter = " AND document_pk IN :document_pks" if document_pks is not None else ""
        statement = text(
            "SELECT rowid, document_pk, distance FROM file_search_vectors "
            f"WHERE embedding MATCH :embedding AND k = :k AND user_id = :user_id{document_filter} "
            "ORDER BY distance"
        )
        parameters: dict[str, object] = {"embedding": vector.tobytes(), "k": min(limit, _MAX_K), "user_id": user_id}
        if document_pks is not None:
            statement = statement.bindparams(bindparam("document_pks", expanding=True))
            parameters["document_pks"] = document_pks
        rows = await session.execute(statement, parameters)
        # vec0's cosine distance is 1 - cosine similarity.
        return [NearChunk(rowid, document_pk, 1.0 - distance) for rowid, document_pk, distance in rows]
