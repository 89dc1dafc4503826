"""Choosing the vector store for the configured database (setting `file_search_vector_store`)."""

from __future__ import annotations

import logging

from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from server.mcp.tools.file_search.pgvector import PgVectorStore, install_pgvector
from server.mcp.tools.file_search.sqlite_vec import SqliteVecStore, enable_sqlite_vec
from server.mcp.tools.file_search.vector_store import ExactVectorStore, VectorStore

log = logging.getLogger(__name__)


async def open_vector_store(choice: str, sessions: async_sessionmaker[AsyncSession]) -> VectorStore:
    """The prepared store: `auto` takes sqlite-vec on SQLite, pgvector on PostgreSQL when the extension can be
    installed, and the exact numpy store otherwise. Naming a backend that cannot run here raises RuntimeError."""
    engine: AsyncEngine = sessions.kw["bind"]
    dialect = engine.dialect.name
    store: VectorStore | None = None
    if dialect == "sqlite" and choice in ("auto", "sqlite-vec"):
        store = await _sqlite_vec_store(engine, sessions, required=choice == "sqlite-vec")
    elif dialect == "postgresql" and choice in ("auto", "pgvector"):
        if await install_pgvector(sessions):
            store = PgVectorStore(sessions)
        elif choice == "pgvector":
            raise RuntimeError("file_search_vector_store=pgvector, but PostgreSQL has no usable vector extension")
    elif choice not in ("auto", "exact"):
        raise RuntimeError(f"file_search_vector_store={choice} does not work with a {dialect} database")
    if store is None:
        store = ExactVectorStore(sessions)
    await store.prepare()
    log.info("file search: vector store %s on %s", store.name, dialect)
    return store


async def _sqlite_vec_store(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], *, required: bool
) -> VectorStore | None:
    try:
        enable_sqlite_vec()
    except OSError as error:
        if required:
            raise RuntimeError(f"sqlite-vec cannot be loaded: {error}") from error
        log.warning("file search: sqlite-vec cannot be loaded (%s); using the exact store", error)
        return None
    # Pooled connections opened before the registration lack the module: replace them all (idle ones close now,
    # busy ones when they are returned).
    await engine.dispose()
    if not await _connection_has_sqlite_vec(sessions):
        raise RuntimeError("sqlite-vec was registered but new SQLite connections do not load it")
    return SqliteVecStore(sessions)


async def _connection_has_sqlite_vec(sessions: async_sessionmaker[AsyncSession]) -> bool:
    async with sessions() as session:
        try:
            await session.execute(text("SELECT vec_version()"))
        except OperationalError:
            return False
    return True
