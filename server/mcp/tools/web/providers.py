"""The search providers google_search can use, each over its documented HTTP API.

They are services the operator configured (not URLs from users), so they are called with a plain httpx client,
not through the SSRF guard.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import httpx

# The original cut snippets at 420 characters.
MAX_SNIPPET_CHARS = 420
# SearXNG filters by these ranges; Google's `qdr:h` (past hour) has no SearXNG equivalent, the nearest is a day.
_SEARXNG_TIME_RANGES = {"qdr:h": "day", "qdr:d": "day", "qdr:w": "week", "qdr:m": "month", "qdr:y": "year"}


class ProviderError(Exception):
    """The provider could not answer; the message says which provider and why."""


@dataclass(frozen=True)
class SearchRequest:
    """One search as sent to a provider: `q` already carries any `site:` restriction."""

    q: str
    num: int = 10
    page: int = 1
    gl: str | None = None
    hl: str | None = None
    tbs: str | None = None
    location: str | None = None
    autocorrect: bool = True


@dataclass(frozen=True)
class SearchHit:
    title: str
    source_url: str
    snippet: str


@dataclass(frozen=True)
class SearchAnswer:
    hits: list[SearchHit]
    # What the provider says it searched for (Serper's `searchParameters`), shown as the payload's `metadata`.
    metadata: dict[str, Any] = field(default_factory=dict)


def _snippet(text: Any) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= MAX_SNIPPET_CHARS else text[: MAX_SNIPPET_CHARS - 1] + "…"


def _reason(response: httpx.Response) -> str:
    """A short readable reason from an error response (Serper sends {"message": ...})."""
    try:
        body = response.json()
        if isinstance(body, dict) and body.get("message"):
            return str(body["message"])[:200]
    except ValueError:
        pass
    return response.reason_phrase or "error"


class SearchProvider(ABC):
    name: str
    label: str

    def __init__(self, base_url: str, timeout_seconds: float) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout_seconds

    @abstractmethod
    async def search(self, request: SearchRequest) -> SearchAnswer: ...

    async def _send(self, method: str, **options: Any) -> Any:
        """The JSON of a successful answer from {base_url}/search; ProviderError otherwise."""
        url = f"{self._base_url}/search"
        try:
            async with httpx.AsyncClient(timeout=self._timeout, trust_env=False) as client:
                response = await client.request(method, url, **options)
        except httpx.TimeoutException:
            raise ProviderError(f"{self.label} did not answer within {self._timeout:g} s") from None
        except httpx.HTTPError as error:
            raise ProviderError(f"could not reach {self.label}: {error or type(error).__name__}") from None
        if response.status_code != 200:
            raise ProviderError(f"{self.label} answered HTTP {response.status_code}: {_reason(response)}")
        try:
            return response.json()
        except ValueError:
            raise ProviderError(f"{self.label} answered with something that is not JSON") from None


class SearxngProvider(SearchProvider):
    """SearXNG's JSON API: `GET /search?q=…&format=json` (the instance must enable the json format)."""

    name = "searxng"
    label = "SearXNG"

    async def search(self, request: SearchRequest) -> SearchAnswer:
        params: dict[str, str | int] = {"q": request.q, "format": "json", "pageno": request.page}
        if request.hl:
            params["language"] = f"{request.hl}-{request.gl.upper()}" if request.gl else request.hl
        if request.tbs in _SEARXNG_TIME_RANGES:
            params["time_range"] = _SEARXNG_TIME_RANGES[request.tbs]
        body = await self._send("GET", params=params)
        results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(results, list):
            raise ProviderError("SearXNG's answer has no results list")
        hits = [
            SearchHit(str(item.get("title") or ""), str(item["url"]), _snippet(item.get("content")))
            for item in results
            if isinstance(item, dict) and item.get("url")
        ]
        metadata = {key: value for key, value in params.items() if key != "format"}
        return SearchAnswer(hits=hits[: request.num], metadata={**metadata, "num": request.num, "engine": "searxng"})


class SerperProvider(SearchProvider):
    """Serper's Google search API: `POST /search` with the key in `X-API-KEY`."""

    name = "serper"
    label = "Serper"

    def __init__(self, base_url: str, timeout_seconds: float, api_key: str) -> None:
        super().__init__(base_url, timeout_seconds)
        self._api_key = api_key

    async def search(self, request: SearchRequest) -> SearchAnswer:
        payload: dict[str, Any] = {"q": request.q, "num": request.num, "page": request.page}
        if not request.autocorrect:
            payload["autocorrect"] = False
        for name in ("gl", "hl", "tbs", "location"):
            value = getattr(request, name)
            if value:
                payload[name] = value
        body = await self._send("POST", json=payload, headers={"X-API-KEY": self._api_key})
        organic = body.get("organic") if isinstance(body, dict) else None
        if not isinstance(organic, list):
            raise ProviderError("Serper's answer has no organic results list")
        hits = [
            SearchHit(str(item.get("title") or ""), str(item["link"]), _snippet(item.get("snippet")))
            for item in organic
            if isinstance(item, dict) and item.get("link")
        ]
        parameters = body.get("searchParameters")
        return SearchAnswer(hits=hits[: request.num], metadata=parameters if isinstance(parameters, dict) else payload)
