"""google_search's cache on both databases and its provider choice, calling the tool class directly with the
loopback stand-in (tests/support/search_standin.py) as the engine. The MCP-level behaviour is in
tests/e2e/test_mcp_web_tools.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.core.config import Settings
from server.core.db import create_engine, session_factory, utcnow
from server.mcp.tools.base import ToolContext
from server.mcp.tools.web.providers import ProviderError, SearchRequest, SerperProvider
from server.mcp.tools.web.search import GoogleSearchTool, configured_provider
from server.mcp.tools.web.store import SearchCache, SearchCacheRow
from tests.support.search_standin import SERPER_KEY, SearchStandin

CONTEXT = ToolContext(user_id="user_test", request_id="req_test")


@pytest.fixture(scope="module")
def standin() -> Iterator[SearchStandin]:
    server = SearchStandin().start()
    yield server
    server.stop()




def settings_for(tmp_path: Path, **values: Any) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path, **values)  # type: ignore[call-arg]


async def stored_rows(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(SearchCacheRow)) or 0)


async def test_answers_are_cached_for_the_ttl_and_offline_mode_reads_them(
    tmp_path: Path, standin: SearchStandin, sessions: async_sessionmaker[AsyncSession]
) -> None:
    tool = GoogleSearchTool(settings_for(tmp_path, searxng_url=f"{standin.base_url}/searxng"), sessions)
    before = standin.hits["/searxng/search"]

    live = await tool.call(CONTEXT, {"q": "unit cache", "num": 2})
    cached = await tool.call(CONTEXT, {"q": "UNIT  cache", "num": 2})
    other_page = await tool.call(CONTEXT, {"q": "unit cache", "num": 2, "page": 2})

    assert standin.hits["/searxng/search"] == before + 2
    assert (live["cache_status"], cached["cache_status"], other_page["cache_status"]) == ("live", "cache", "live")
    assert cached["results"] == [{**result, "cache_status": "cache"} for result in live["results"]]
    assert await stored_rows(sessions) == 2


async def test_a_zero_ttl_always_asks_the_engine_but_offline_mode_still_has_the_answer(
    tmp_path: Path, standin: SearchStandin, sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = settings_for(tmp_path, searxng_url=f"{standin.base_url}/searxng", search_cache_ttl_seconds=0)
    tool = GoogleSearchTool(settings, sessions)
    first = await tool.call(CONTEXT, {"q": "always live"})
    second = await tool.call(CONTEXT, {"q": "always live"})
    offline = await tool.call(CONTEXT, {"q": "always live", "offline_mode": True})
    assert (first["live"], second["live"], offline["live"]) == (True, True, False)
    assert offline["results"][0]["fetched_at"] == second["results"][0]["fetched_at"]
    assert await stored_rows(sessions) == 1


async def test_old_answers_are_dropped_and_concurrent_identical_writes_are_fine(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    cache = SearchCache(sessions)
    answer = {"metadata": {}, "results": []}
    now = utcnow()
    await cache.put("old", "searxng", "old", answer, now - timedelta(days=40), timedelta(days=30))
    assert await cache.get("old") is not None
    await asyncio.gather(*(
        cache.put("same", "serper", "same", answer, now, timedelta(days=30)) for _ in range(4)
    ))
    assert await cache.get("old") is None
    stored = await cache.get("same")
    assert stored is not None and stored.engine == "serper" and stored.fetched_at == now


def test_provider_choice(tmp_path: Path) -> None:
    both = {"searxng_url": "http://searx.internal", "serper_api_key": SERPER_KEY}
    chosen = {
        engine: configured_provider(settings_for(tmp_path, search_engine=engine, **both))
        for engine in ("auto", "serper", "searxng")
    }
    assert {engine: provider and provider.name for engine, provider in chosen.items()} == {
        "auto": "serper", "serper": "serper", "searxng": "searxng",
    }
    only_searxng = configured_provider(settings_for(tmp_path, searxng_url="http://searx.internal"))
    assert only_searxng is not None and only_searxng.name == "searxng"
    assert configured_provider(settings_for(tmp_path, search_engine="serper", searxng_url="http://s")) is None


@pytest.mark.parametrize(("engine", "missing"), [
    ("auto", "set JAN_SEARXNG_URL (a SearXNG instance) or JAN_SERPER_API_KEY"),
    ("serper", "set JAN_SERPER_API_KEY"),
    ("searxng", "set JAN_SEARXNG_URL"),
])
def test_an_unconfigured_engine_names_the_missing_setting(tmp_path: Path, engine: str, missing: str) -> None:
    sessions = session_factory(create_engine("sqlite+aiosqlite://"))  # never used: nothing is searched
    tool = GoogleSearchTool(settings_for(tmp_path, search_engine=engine), sessions)
    assert tool.unavailable_reason() == f"no search engine is configured: {missing}"


async def test_a_wrong_serper_key_is_a_readable_error(standin: SearchStandin) -> None:
    provider = SerperProvider(f"{standin.base_url}/serper", 5, "wrong-key")
    with pytest.raises(ProviderError, match=r"^Serper answered HTTP 403: Unauthorized\.$"):
        await provider.search(SearchRequest(q="x"))
