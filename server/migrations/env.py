"""Alembic environment. Normally driven by server.core.migrate, which passes an open connection in
`config.attributes["connection"]`; otherwise (a developer's `command.revision(..., autogenerate=True)`) it
connects to `sqlalchemy.url` itself.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

# Importing a service's store registers its tables on Base.metadata, which autogenerate diffs against.
import server.auth.oidc.store
import server.auth.store
import server.llm.catalog.store
import server.llm.completions.store
import server.llm.conversations.store
import server.llm.projects.store
import server.mcp.store
import server.mcp.tools.file_search.store
import server.mcp.tools.web.store
import server.media.store
import server.responses.store  # noqa: F401
from server.core.db import Base

target_metadata = Base.metadata


def _include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Leaves autogenerate blind to the vector tables file search creates at run time (sqlite-vec's virtual table and
    its shadow tables, pgvector's table): they need an extension the migration's connection may not have."""
    return not (type_ == "table" and name is not None and name.startswith("file_search_vectors"))


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite can't ALTER most things; batch mode recreates the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        include_name=_include_name,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine(url: str) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


def _run_offline(url: str) -> None:
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
elif context.is_offline_mode():
    _run_offline(context.config.get_main_option("sqlalchemy.url") or "")
else:
    asyncio.run(_run_with_own_engine(context.config.get_main_option("sqlalchemy.url") or ""))
