"""Fixtures that start real services: PostgreSQL, and the whole stack on SQLite and on PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.core.db import create_engine, session_factory
from server.core.migrate import run_migrations
from tests.support.postgres import PostgresServer
from tests.support.stack import Stack, make_stack

DATABASES = ["sqlite", "postgres"]
_database_names = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


def _database_url(kind: str, request: pytest.FixtureRequest, sqlite_path: str) -> str:
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{sqlite_path}"
    postgres: PostgresServer = request.getfixturevalue("postgres")
    return postgres.create_database(f"jan_test_{next(_database_names)}")


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """An empty database of each kind, for tests of storage code. The SQLite file's folder does not exist yet:
    migrations create it."""
    return _database_url(request.param, request, str(tmp_path / "db" / "jan.db"))


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on a migrated database of each kind."""
    await run_migrations(database_url)
    engine = create_engine(database_url)
    yield session_factory(engine)
    await engine.dispose()


@pytest.fixture(scope="session", params=DATABASES)
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole server through Envoy, as `make run` starts it, once per database kind."""
    url = _database_url(request.param, request, str(tmp_path_factory.mktemp("stack") / "jan.db"))
    server = make_stack(url)
    server.start()
    yield server
    server.stop()
