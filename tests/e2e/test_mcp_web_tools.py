"""google_search and scrape through `POST /v1/mcp`, on stacks whose search engine is the loopback stand-in
(tests/support/search_standin.py) speaking SearXNG's or Serper's JSON API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from tests.e2e.conftest import mcp_rpc
from tests.support.ports import free_port
from tests.support.search_standin import ARTICLE_TITLE, NOTES_TEXT, SERPER_KEY, SearchStandin
from tests.support.stack import Stack, make_stack

SCRAPE_MAX_BYTES = 1024 * 1024


@pytest.fixture(scope="module")
def standin() -> Iterator[SearchStandin]:
    server = SearchStandin().start()
    yield server
    server.stop()


def _started(stack: Stack) -> Stack:
    stack.start()
    return stack


@pytest.fixture(scope="module")
def searxng_stack(standin: SearchStandin) -> Iterator[Stack]:
    """SearXNG as the engine; scrape may reach the stand-in's port (and no other private destination)."""
    stack = _started(make_stack(
        searxng_url=f"{standin.base_url}/searxng",
        ssrf_allow_hosts=json.dumps([f"127.0.0.1:{standin.port}"]),
        scrape_max_bytes=str(SCRAPE_MAX_BYTES),
    ))
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def serper_stack(standin: SearchStandin) -> Iterator[Stack]:
    stack = _started(make_stack(serper_url=f"{standin.base_url}/serper", serper_api_key=SERPER_KEY))
    yield stack
    stack.stop()


def call_tool(stack: Stack, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The MCP tools/call result (content, structuredContent, isError); a payload matches the advertised
    outputSchema and is also the text content."""
    result = mcp_rpc(stack, "tools/call", {"name": name, "arguments": arguments})
    if not result["isError"]:
        assert json.loads(result["content"][0]["text"]) == result["structuredContent"]
        tools = {tool["name"]: tool for tool in mcp_rpc(stack, "tools/list", {})["tools"]}
        Draft202012Validator(tools[name]["outputSchema"]).validate(result["structuredContent"])
    return result


def payload_of(result: dict[str, Any]) -> dict[str, Any]:
    assert result["isError"] is False, result["content"][0]["text"]
    payload: dict[str, Any] = result["structuredContent"]
    return payload


def error_of(result: dict[str, Any]) -> str:
    assert result["isError"] is True, result
    text: str = result["content"][0]["text"]
    return text


# google_search


def test_searxng_search_returns_the_original_payload(searxng_stack: Stack, standin: SearchStandin) -> None:
    payload = payload_of(call_tool(searxng_stack, "google_search", {"q": "tidal power searx", "num": 3}))
    assert (payload["query"], payload["engine"], payload["live"], payload["cache_status"]) == (
        "tidal power searx", "searxng", True, "live")
    assert [result["position"] for result in payload["results"]] == [1, 2, 3]
    first = payload["results"][0]
    assert first["title"] == "SearXNG result 1 for tidal power searx"
    assert first["source_url"] == "https://searx.example/1/1" and first["snippet"].startswith("Snippet 1")
    assert first["cache_status"] == "live" and first["fetched_at"].endswith("Z")
    assert payload["citations"] == [result["source_url"] for result in payload["results"]]


def test_search_parameters_reach_searxng(searxng_stack: Stack) -> None:
    payload = payload_of(call_tool(searxng_stack, "google_search", {
        "q": "fundy params", "page": 2, "hl": "fr", "gl": "ca", "tbs": "qdr:w",
    }))
    assert payload["metadata"] == {"q": "fundy params", "pageno": 2, "language": "fr-CA", "time_range": "week",
                                   "num": 10, "engine": "searxng"}
    assert payload["results"][0]["source_url"] == "https://searx.example/2/1"


def test_domain_allow_list_rewrites_the_query(searxng_stack: Stack) -> None:
    payload = payload_of(call_tool(searxng_stack, "google_search", {
        "q": "tides", "domain_allow_list": ["noaa.gov", "https://www.bayoffundy.com/tides"],
    }))
    assert payload["query"] == "(tides) (site:noaa.gov OR site:www.bayoffundy.com)"
    assert payload["metadata"]["q"] == payload["query"]


def test_a_repeated_search_comes_from_the_cache(searxng_stack: Stack, standin: SearchStandin) -> None:
    before = standin.hits["/searxng/search"]
    live = payload_of(call_tool(searxng_stack, "google_search", {"q": "cached tide tables"}))
    again = payload_of(call_tool(searxng_stack, "google_search", {"q": "  Cached   TIDE tables "}))
    assert standin.hits["/searxng/search"] == before + 1
    assert (live["live"], again["live"], again["cache_status"]) == (True, False, "cache")
    assert again["results"][0]["cache_status"] == "cache"
    assert [r["source_url"] for r in again["results"]] == [r["source_url"] for r in live["results"]]
    assert again["results"][0]["fetched_at"] == live["results"][0]["fetched_at"]


def test_offline_mode_answers_from_the_cache_only(searxng_stack: Stack, standin: SearchStandin) -> None:
    live = payload_of(call_tool(searxng_stack, "google_search", {"q": "offline tides", "num": 4}))
    before = standin.hits["/searxng/search"]

    offline = payload_of(call_tool(searxng_stack, "google_search", {"q": "offline tides", "num": 4,
                                                                     "offline_mode": True}))
    assert (offline["live"], offline["cache_status"], offline["engine"]) == (False, "offline", "searxng")
    assert offline["citations"] == live["citations"] and len(offline["results"]) == 4
    assert {result["cache_status"] for result in offline["results"]} == {"offline"}

    never = payload_of(call_tool(searxng_stack, "google_search", {"q": "never searched", "offline_mode": True}))
    assert (never["live"], never["cache_status"], never["results"], never["citations"]) == (
        False, "offline", [], [])
    assert standin.hits["/searxng/search"] == before


def test_a_provider_error_is_a_tool_error(searxng_stack: Stack) -> None:
    message = error_of(call_tool(searxng_stack, "google_search", {"q": "standin-fail please"}))
    assert message == "google_search failed: SearXNG answered HTTP 500: Internal Server Error"


def test_serper_search(serper_stack: Stack, standin: SearchStandin) -> None:
    payload = payload_of(call_tool(serper_stack, "google_search", {
        "q": "bay of fundy", "num": 5, "gl": "ca", "hl": "en", "location": "Halifax, Nova Scotia",
    }))
    assert (payload["engine"], payload["live"], payload["cache_status"]) == ("serper", True, "live")
    assert len(payload["results"]) == 5 and payload["results"][4]["position"] == 5
    assert payload["results"][0] == {
        "position": 1, "title": "Serper result 1 for bay of fundy", "source_url": "https://serper.example/1/1",
        "snippet": "Serper snippet 1 about bay of fundy.", "cache_status": "live",
        "fetched_at": payload["results"][0]["fetched_at"],
    }
    assert payload["metadata"] == {"q": "bay of fundy", "gl": "ca", "hl": "en", "num": 5, "page": 1,
                                   "location": "Halifax, Nova Scotia", "type": "search", "engine": "google"}


def test_serper_cache_and_offline(serper_stack: Stack, standin: SearchStandin) -> None:
    before = standin.hits["/serper/search"]
    first = payload_of(call_tool(serper_stack, "google_search", {"q": "minas passage"}))
    cached = payload_of(call_tool(serper_stack, "google_search", {"q": "minas passage"}))
    offline = payload_of(call_tool(serper_stack, "google_search", {"q": "minas passage", "offline_mode": True}))
    assert standin.hits["/serper/search"] == before + 1
    assert (first["cache_status"], cached["cache_status"], offline["cache_status"]) == ("live", "cache", "offline")
    assert first["citations"] == cached["citations"] == offline["citations"]


def test_without_an_engine_google_search_lists_but_answers_is_error(stack: Stack) -> None:
    missing = "no search engine is configured: set JAN_SEARXNG_URL (a SearXNG instance) or JAN_SERPER_API_KEY"
    listed = {tool["name"]: tool for tool in mcp_rpc(stack, "tools/list", {})["tools"]}
    assert listed["google_search"]["description"].endswith(f"(unavailable: {missing})")
    assert error_of(call_tool(stack, "google_search", {"q": "anything"})) == (
        f"Tool 'google_search' is unavailable: {missing}")


def test_scrape_needs_no_configuration(stack: Stack) -> None:
    listed = {tool["name"]: tool for tool in mcp_rpc(stack, "tools/list", {})["tools"]}
    assert "unavailable" not in listed["scrape"]["description"]
    message = error_of(call_tool(stack, "scrape", {"url": "http://no-such-host.invalid/"}))
    assert message.startswith("scrape failed: could not resolve no-such-host.invalid")


# scrape


def test_scrape_returns_the_main_text_and_metadata(searxng_stack: Stack, standin: SearchStandin) -> None:
    url = f"{standin.base_url}/pages/article.html"
    payload = payload_of(call_tool(searxng_stack, "scrape", {"url": url}))
    assert payload["source_url"] == url and payload["cache_status"] == "live" and payload["fetched_at"].endswith("Z")
    assert payload["text"].startswith(ARTICLE_TITLE) and "underwater turbines" in payload["text"]
    assert "should never appear" not in payload["text"] and "Home | About" not in payload["text"]
    assert payload["text_preview"] == payload["text"][:600]
    assert "markdown" not in payload
    metadata = payload["metadata"]
    assert metadata["title"] == ARTICLE_TITLE and metadata["author"] == "Ada Tester"
    assert metadata["description"].startswith("How the highest tides")
    assert (metadata["final_url"], metadata["status"], metadata["content_type"]) == (url, 200, "text/html")


def test_scrape_with_markdown(searxng_stack: Stack, standin: SearchStandin) -> None:
    payload = payload_of(call_tool(searxng_stack, "scrape", {
        "url": f"{standin.base_url}/redirect?to=/pages/article.html", "includeMarkdown": True,
    }))
    assert payload["markdown"].startswith(f"# {ARTICLE_TITLE}")
    assert "## Turbines on the seabed" in payload["markdown"] and "**underwater turbines**" in payload["markdown"]
    assert "[full report](https://example.org/fundy-report)" in payload["markdown"]
    assert payload["metadata"]["final_url"] == f"{standin.base_url}/pages/article.html"


def test_scrape_reads_the_charset_a_page_declares(searxng_stack: Stack, standin: SearchStandin) -> None:
    payload = payload_of(call_tool(searxng_stack, "scrape", {
        "url": f"{standin.base_url}/pages/cafe.html", "includeMarkdown": True,
    }))
    assert payload["text"] == "Un café très crémeux." and payload["metadata"]["title"] == "Café crème"
    assert "Un café très crémeux." in payload["markdown"]


def test_scrape_of_plain_text_and_binary(searxng_stack: Stack, standin: SearchStandin) -> None:
    notes = payload_of(call_tool(searxng_stack, "scrape", {"url": f"{standin.base_url}/pages/notes.txt"}))
    assert notes["text"] == NOTES_TEXT and notes["metadata"]["content_type"] == "text/plain"
    message = error_of(call_tool(searxng_stack, "scrape", {"url": f"{standin.base_url}/pages/logo.png"}))
    assert message == "scrape cannot read image/png content: only HTML and text pages"
    missing = error_of(call_tool(searxng_stack, "scrape", {"url": f"{standin.base_url}/pages/missing"}))
    assert missing.endswith("answered HTTP 404")


@pytest.mark.parametrize(("url", "reason"), [
    ("http://127.0.0.1:{grpc}/", "127.0.0.1 is a loopback address"),
    ("http://0x7f.1:{grpc}/", "0x7f.1 (127.0.0.1) is a loopback address"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a cloud metadata endpoint"),
    ("http://[::ffff:10.0.0.1]/", "::ffff:10.0.0.1 is an IPv6 form of 10.0.0.1, a private network address"),
    ("http://localhost:{grpc}/", "localhost is a localhost name"),
    ("file:///etc/passwd", "only http and https URLs may be fetched, not file"),
    ("gopher://127.0.0.1:70/", "only http and https URLs may be fetched, not gopher"),
    ("{standin}/redirect?to=http://127.0.0.1:{other}/", "127.0.0.1 is a loopback address"),
])
def test_scrape_refuses_hostile_urls(searxng_stack: Stack, standin: SearchStandin, url: str, reason: str) -> None:
    target = url.format(grpc=searxng_stack.env["JAN_GRPC_PORT"], standin=standin.base_url, other=free_port())
    message = error_of(call_tool(searxng_stack, "scrape", {"url": target}))
    assert message == f"scrape refused the URL: {reason}"


def test_scrape_of_too_large_a_page_is_an_error(searxng_stack: Stack, standin: SearchStandin) -> None:
    message = error_of(call_tool(searxng_stack, "scrape", {"url": f"{standin.base_url}/pages/large.html"}))
    assert message.startswith("scrape failed: ") and f"larger than the {SCRAPE_MAX_BYTES} byte limit" in message
