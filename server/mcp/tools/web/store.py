"""The `search_cache` table: google_search answers kept by request, shared by all users (a web search holds
nothing private), so repeated searches cost no provider call and `offline_mode` has something to answer from."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Index, String, Text, delete, or_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, UtcDateTime


class SearchCacheRow(Base):
    __tablename__ = "search_cache"
    __table_args__ = (Index("ix_search_cache_fetched_at", "fetched_at"),)

    # sha256 (hex) of the normalized request: see server/mcp/tools/web/search.py::SearchRequest.cache_key.
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    engine: Mapped[str] = mapped_column(String(32))
    query: Mapped[str] = mapped_column(Text)
    # {"metadata": {...}, "results": [{title, source_url, snippet}]} as the provider answered.
    answer: Mapped[str] = mapped_column(Text)
    fetched_at: Mapped[datetime] = mapped_column(UtcDateTime)


@dataclass(frozen=True)
class CachedSearch:
    engine: str
    answer: dict[str, Any]
    fetched_at: datetime


class SearchCache:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def get(self, key: str) -> CachedSearch | None:
        async with self._sessions() as session:
            row = await session.get(SearchCacheRow, key)
        if row is None:
            return None
        return CachedSearch(engine=row.engine, answer=json.loads(row.answer), fetched_at=row.fetched_at)

    async def put(
        self, key: str, engine: str, query: str, answer: dict[str, Any], fetched_at: datetime, retention: timedelta
    ) -> None:
        """Stores (or replaces) one answer and drops those older than `retention`."""
        try:
            async with self._sessions.begin() as session:
                await session.execute(
                    delete(SearchCacheRow).where(
                        or_(SearchCacheRow.key == key, SearchCacheRow.fetched_at < fetched_at - retention)
                    )
                )
                stored = json.dumps(answer)
                session.add(SearchCacheRow(key=key, engine=engine, query=query, answer=stored, fetched_at=fetched_at))
        except IntegrityError:
            pass  # a concurrent identical search stored its answer first; either one will do
