"""`file_search_index` / `file_search_query` through Envoy's `POST /v1/mcp`, with the real all-MiniLM-L6-v2
embeddings and the server's vector store (sqlite-vec on SQLite, the exact store on this machine's PostgreSQL)."""

from __future__ import annotations

import itertools
import json
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import guest_login
from tests.support.stack import Stack

DOCUMENTS = {
    "astronomy": (
        "The James Webb Space Telescope observes the universe in infrared light. Its gold-coated mirror is 6.5 "
        "metres across, and it orbits the Sun near the second Lagrange point, far beyond the Moon."
    ),
    "baking": (
        "To bake sourdough bread, feed the starter the night before, mix flour, water and salt, then let the "
        "dough rise slowly. Bake it in a very hot Dutch oven so the crust turns dark and crisp."
    ),
    "finance": (
        "A central bank raises interest rates to cool inflation. Higher rates make mortgages and business loans "
        "more expensive, which slows borrowing, spending and eventually the growth of prices."
    ),
    "gardening": (
        "Tomato plants need at least six hours of direct sun and deep, regular watering. Pinch off the side "
        "shoots and tie the stems to stakes so the fruit does not rest on the soil."
    ),
}
_request_ids = itertools.count(1)


def call_tool(http: httpx.Client, headers: dict[str, str], name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """A stateless `tools/call`; returns the JSON-RPC message (its `result` or `error`)."""
    response = http.post(
        "/v1/mcp",
        headers={**headers, "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"},
        json={"jsonrpc": "2.0", "id": next(_request_ids), "method": "tools/call",
              "params": {"name": name, "arguments": arguments}},
    )
    assert response.status_code == 200, response.text
    return response.json()


def payload(message: dict[str, Any]) -> dict[str, Any]:
    result = message["result"]
    assert result["isError"] is False, result
    assert json.loads(result["content"][0]["text"]) == result["structuredContent"]
    return result["structuredContent"]


def index(http: httpx.Client, headers: dict[str, str], document_id: str, text: str, **extra: Any) -> dict[str, Any]:
    return payload(call_tool(http, headers, "file_search_index", {"document_id": document_id, "text": text, **extra}))


def query(http: httpx.Client, headers: dict[str, str], text: str, **extra: Any) -> dict[str, Any]:
    return payload(call_tool(http, headers, "file_search_query", {"query": text, **extra}))


@pytest.fixture
def user(stack: Stack) -> dict[str, str]:
    """A fresh guest with the four topic documents indexed."""
    headers = {"Authorization": f"Bearer {guest_login(stack)['access_token']}"}
    with httpx.Client(base_url=stack.base_url, timeout=120) as http:
        for document_id, text in DOCUMENTS.items():
            indexed = index(http, headers, document_id, text, metadata={"topic": document_id}, tags=[document_id])
            assert indexed["status"] == "indexed" and indexed["document_id"] == document_id
            assert indexed["chunks"] == 1 and 30 < indexed["token_count"] < 80
            assert indexed["indexed_at"].endswith("Z")
    return headers


def test_tools_are_listed_with_integer_top_k(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    response = http.post("/v1/mcp", headers={**auth_headers, "Accept": "application/json, text/event-stream"},
                         json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    tools = {tool["name"]: tool for tool in response.json()["result"]["tools"]}
    assert {"file_search_index", "file_search_query"} <= tools.keys()
    top_k = tools["file_search_query"]["inputSchema"]["properties"]["top_k"]
    assert top_k["type"] == "integer" and top_k["maximum"] == 20 and top_k["default"] == 5
    assert "unavailable" not in tools["file_search_query"]["description"]


@pytest.mark.parametrize(("question", "expected"), [
    ("Which space observatory looks at infrared radiation?", "astronomy"),
    ("How do I make a loaf with a crunchy crust?", "baking"),
    ("Why does raising the cost of borrowing bring inflation down?", "finance"),
    ("How should I care for my vegetable garden?", "gardening"),
])
def test_a_paraphrase_finds_the_right_document_first(
    http: httpx.Client, user: dict[str, str], question: str, expected: str
) -> None:
    answer = query(http, user, question)
    assert answer["query"] == question and answer["top_k"] == 5 and answer["count"] == 4
    best, *others = answer["results"]
    assert best["document_id"] == expected
    assert best["score"] > others[0]["score"] + 0.1
    assert best["text_preview"] == DOCUMENTS[expected]
    assert best["metadata"] == {"topic": expected} and best["tags"] == [expected]
    assert [r["score"] for r in answer["results"]] == sorted((r["score"] for r in answer["results"]), reverse=True)


def test_reindexing_replaces_the_document(http: httpx.Client, user: dict[str, str]) -> None:
    index(http, user, "baking", "Marathon runners train with long slow runs and taper before the race.",
          tags=["sport"])
    answer = query(http, user, "sourdough starter and Dutch oven")
    assert all("sourdough" not in r["text_preview"] for r in answer["results"])
    [sport] = [r for r in query(http, user, "preparing for a long-distance race")["results"][:1]]
    assert sport["document_id"] == "baking" and sport["tags"] == ["sport"] and sport["metadata"] == {}
    assert query(http, user, "anything", top_k=20)["count"] == 4


def test_document_ids_and_top_k_limit_the_results(http: httpx.Client, user: dict[str, str]) -> None:
    answer = query(http, user, "telescope mirror", document_ids=["baking", "finance", "not-mine"])
    assert {r["document_id"] for r in answer["results"]} == {"baking", "finance"}
    assert query(http, user, "telescope mirror", document_ids=[])["results"] == []
    assert [r["document_id"] for r in query(http, user, "telescope mirror", top_k=1)["results"]] == ["astronomy"]
    for bad in (0, 21, 2.5):
        message = call_tool(http, user, "file_search_query", {"query": "x", "top_k": bad})
        assert message["error"]["code"] == -32602 and "top_k" in message["error"]["message"], message


def test_invalid_documents_are_refused(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    for arguments in (
        {"document_id": "has spaces", "text": "x"},
        {"document_id": "x" * 129, "text": "x"},
        {"document_id": "ok", "text": ""},
        {"document_id": "ok", "text": "x", "tags": ["t"] * 33},
        {"document_id": "ok", "text": "x" * 100_001},
        {"text": "no id"},
    ):
        message = call_tool(http, auth_headers, "file_search_index", arguments)
        assert message["error"]["code"] == -32602, message


def test_another_user_sees_nothing_and_owns_the_same_document_id(
    http: httpx.Client, user: dict[str, str], stack: Stack
) -> None:
    other = {"Authorization": f"Bearer {guest_login(stack)['access_token']}"}
    assert query(http, other, "infrared space telescope", top_k=20)["results"] == []
    assert query(http, other, "infrared space telescope", document_ids=["astronomy"])["results"] == []

    index(http, other, "astronomy", "Penguins live in the southern hemisphere and cannot fly.")
    [theirs] = query(http, other, "birds of Antarctica")["results"]
    assert theirs["document_id"] == "astronomy" and "Penguins" in theirs["text_preview"]
    mine = query(http, user, "infrared space telescope")["results"][0]
    assert mine["document_id"] == "astronomy" and "James Webb" in mine["text_preview"]


def test_a_long_document_is_chunked_and_the_matching_chunk_is_previewed(
    http: httpx.Client, auth_headers: dict[str, str]
) -> None:
    filler = " ".join(f"Paragraph {i} talks about the history of medieval castles and their stone walls." for i in
                      range(60))
    needle = "The octopus has three hearts and blue blood, and it can change colour in an instant."
    indexed = index(http, auth_headers, "long-read", f"{filler}\n\n{needle}\n\n{filler}")
    assert indexed["chunks"] >= 6 and indexed["token_count"] > 1000
    [result] = query(http, auth_headers, "sea creature with several hearts")["results"]
    assert result["document_id"] == "long-read" and needle in result["text_preview"]
