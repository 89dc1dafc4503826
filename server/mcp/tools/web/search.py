"""The `google_search` tool: the original's arguments and payload, answered by SearXNG or Serper, through a
database cache that also serves `offline_mode`."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.core.config import Settings
from server.core.db import utcnow
from server.mcp.tools.base import Tool, ToolContext, ToolError
from server.mcp.tools.web.providers import (
    ProviderError,
    SearchAnswer,
    SearchHit,
    SearchProvider,
    SearchRequest,
    SearxngProvider,
    SerperProvider,
)
from server.mcp.tools.web.store import SearchCache

MAX_RESULTS = 100


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC, as the original's `fetched_at`."""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _optional_text(arguments: dict[str, Any], name: str) -> str | None:
    value = arguments.get(name)
    return value.strip() or None if isinstance(value, str) else None


def restricted_query(q: str, domains: list[str]) -> str:
    """The original's rewrite for a domain allow-list: `(<q>) (site:a OR site:b)`."""
    if not domains:
        return q
    return f"({q}) ({' OR '.join(f'site:{domain}' for domain in domains)})"


def _domains(values: list[str]) -> list[str]:
    """Bare lowercased hostnames, each once, in order (a pasted URL keeps only its host)."""
    domains: list[str] = []
    for value in values:
        domain = value.strip().lower().removeprefix("https://").removeprefix("http://").split("/", 1)[0]
        if domain and domain not in domains:
            domains.append(domain)
    return domains


def search_request(arguments: dict[str, Any], domain_filter: list[str]) -> SearchRequest:
    """The provider request for validated tool arguments (the registry checked them against the schema)."""
    domains = _domains([*arguments.get("domain_allow_list", []), *domain_filter])
    return SearchRequest(
        q=restricted_query(" ".join(str(arguments["q"]).split()), domains),
        num=int(arguments.get("num", 10)),
        page=int(arguments.get("page", 1)),
        gl=_optional_text(arguments, "gl"),
        hl=_optional_text(arguments, "hl"),
        tbs=_optional_text(arguments, "tbs"),
        location=_optional_text(arguments, "location") or _optional_text(arguments, "location_hint"),
        autocorrect=bool(arguments.get("autocorrect", True)),
    )


def cache_key(request: SearchRequest) -> str:
    """Identical searches share a key whatever the case and spacing of the query and which provider answered."""
    normalized = {
        "q": request.q.casefold(),
        "num": request.num,
        "page": request.page,
        "gl": (request.gl or "").lower(),
        "hl": (request.hl or "").lower(),
        "tbs": request.tbs or "",
        "location": (request.location or "").casefold(),
        "autocorrect": request.autocorrect,
    }
    return hashlib.sha256(json.dumps(normalized, sort_keys=True).encode()).hexdigest()


def payload(
    request: SearchRequest, engine: str, answer: SearchAnswer, fetched_at: datetime | None, cache_status: str
) -> dict[str, Any]:
    fetched = timestamp(fetched_at) if fetched_at else None
    results = [
        {
            "position": position,
            "title": hit.title,
            "source_url": hit.source_url,
            "snippet": hit.snippet,
            "cache_status": cache_status,
            "fetched_at": fetched,
        }
        for position, hit in enumerate(answer.hits, start=1)
    ]
    return {
        "query": request.q,
        "engine": engine,
        "live": cache_status == "live",
        "cache_status": cache_status,
        "metadata": answer.metadata,
        "results": results,
        "citations": [hit.source_url for hit in answer.hits],
    }


def _stored(answer: SearchAnswer) -> dict[str, Any]:
    return {"metadata": answer.metadata, "results": [vars(hit) for hit in answer.hits]}


def _loaded(stored: dict[str, Any]) -> SearchAnswer:
    return SearchAnswer(hits=[SearchHit(**hit) for hit in stored["results"]], metadata=stored["metadata"])


def _text_property(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "q": {"type": "string", "minLength": 1, "description": "The search query."},
        "num": {"type": "integer", "minimum": 1, "maximum": MAX_RESULTS, "description": "Results wanted (default 10)."},
        "page": {"type": "integer", "minimum": 1, "maximum": 100, "description": "Result page, from 1 (default 1)."},
        "gl": _text_property("Country to search from, a two-letter code such as 'us' or 'de'."),
        "hl": _text_property("Interface and result language, such as 'en' or 'fr'."),
        "location": _text_property("Place the search is made from, such as 'Berlin, Germany' (Serper only)."),
        "location_hint": _text_property("Used as `location` when that is not given."),
        "tbs": _text_property("Time filter: qdr:h (past hour), qdr:d, qdr:w, qdr:m or qdr:y (past year)."),
        "autocorrect": {"type": "boolean", "description": "Let the engine correct spelling (default true)."},
        "domain_allow_list": {
            "type": "array",
            "items": {"type": "string", "minLength": 1},
            "description": "Only return results from these domains (e.g. ['python.org', 'arxiv.org']).",
        },
        "offline_mode": {
            "type": "boolean",
            "description": "Answer only from earlier searches kept by the server, without calling the engine.",
        },
    },
    "required": ["q"],
}

_RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "position": {"type": "integer"},
        "title": {"type": "string"},
        "source_url": {"type": "string"},
        "snippet": {"type": "string"},
        "cache_status": {"type": "string"},
        "fetched_at": {"type": ["string", "null"]},
    },
    "required": ["position", "title", "source_url", "snippet", "cache_status", "fetched_at"],
}

OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "description": "The query sent, with any site: restriction."},
        "engine": {"type": "string", "description": "searxng or serper"},
        "live": {"type": "boolean", "description": "Whether the engine was asked just now."},
        "cache_status": {"type": "string", "enum": ["live", "cache", "offline"]},
        "metadata": {"type": "object", "description": "The search parameters the engine used."},
        "results": {"type": "array", "items": _RESULT_SCHEMA},
        "citations": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["query", "engine", "live", "cache_status", "metadata", "results", "citations"],
}


def configured_provider(settings: Settings) -> SearchProvider | None:
    """The provider the settings select, or None when the one selected (or any, for `auto`) is not set up."""
    serper_key = settings.serper_api_key.get_secret_value()
    serper = SerperProvider(settings.serper_url, settings.search_timeout_seconds, serper_key) if serper_key else None
    searxng = SearxngProvider(settings.searxng_url, settings.search_timeout_seconds) if settings.searxng_url else None
    if settings.search_engine == "serper":
        return serper
    if settings.search_engine == "searxng":
        return searxng
    return serper or searxng


class GoogleSearchTool(Tool):
    name = "google_search"
    description = (
        "Search the web and get structured results (title, URL, snippet) with citations. Answered by the "
        "configured engine (SearXNG or Serper's Google search); identical searches are served from the server's "
        "cache for a while, and offline_mode answers only from that cache."
    )
    input_schema = INPUT_SCHEMA
    output_schema = OUTPUT_SCHEMA

    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._settings = settings
        self._provider = configured_provider(settings)
        self._cache = SearchCache(sessions)

    def unavailable_reason(self) -> str | None:
        if self._provider is not None:
            return None
        if self._settings.search_engine == "serper":
            return "no search engine is configured: set JAN_SERPER_API_KEY"
        if self._settings.search_engine == "searxng":
            return "no search engine is configured: set JAN_SEARXNG_URL"
        return "no search engine is configured: set JAN_SEARXNG_URL (a SearXNG instance) or JAN_SERPER_API_KEY"

    async def call(self, context: ToolContext, arguments: dict[str, Any]) -> dict[str, Any]:
        if self._provider is None:
            raise ToolError(f"google_search is unavailable: {self.unavailable_reason()}")
        request = search_request(arguments, self._settings.search_domain_filter)
        key = cache_key(request)
        cached = await self._cache.get(key)
        if arguments.get("offline_mode"):
            if cached is None:
                return payload(request, self._provider.name, SearchAnswer(hits=[]), None, "offline")
            return payload(request, cached.engine, _loaded(cached.answer), cached.fetched_at, "offline")
        ttl = timedelta(seconds=self._settings.search_cache_ttl_seconds)
        if cached is not None and utcnow() - cached.fetched_at < ttl:
            return payload(request, cached.engine, _loaded(cached.answer), cached.fetched_at, "cache")
        try:
            answer = await self._provider.search(request)
        except ProviderError as error:
            raise ToolError(f"google_search failed: {error}") from None
        fetched_at = utcnow()
        retention = timedelta(days=self._settings.search_cache_retention_days)
        await self._cache.put(key, self._provider.name, request.q, _stored(answer), fetched_at, retention)
        return payload(request, self._provider.name, answer, fetched_at, "live")
