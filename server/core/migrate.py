"""Schema migrations: Alembic, driven from Python so no alembic.ini is needed at runtime.

`run_migrations(url)` upgrades any supported database to head; it is safe to run on every start.

Adding a revision (developers): change the models (import a new store module in server/migrations/env.py),
then let Alembic diff a database at head against them:

    import asyncio
    from alembic import command
    from server.core.migrate import make_alembic_config, run_migrations

    url = "sqlite+aiosqlite:///data/dev.db"
    asyncio.run(run_migrations(url))
    command.revision(make_alembic_config(url), message="add widgets", rev_id="0002", autogenerate=True)

then review the file it writes to server/migrations/versions/ (autogenerate misses renames, server defaults).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def make_alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would eat the `%` of URL-encoded passwords.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


async def run_migrations(database_url: str) -> None:
    """Upgrades the database to the newest revision (a no-op when it is already there)."""
    _create_sqlite_parent_dir(database_url)
    # A plain engine, not server.core.db.create_engine: SQLite must keep foreign_keys OFF here, because batch
    # migrations drop and recreate tables, and with ON DELETE CASCADE enforced that would delete child rows.
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade_to_head, make_alembic_config(database_url))
    finally:
        await engine.dispose()


def _upgrade_to_head(connection: Connection, config: Config) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _create_sqlite_parent_dir(database_url: str) -> None:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
