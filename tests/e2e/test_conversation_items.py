"""Conversation items through Envoy: OpenAI's item shapes from both request forms, paging, titles, validation
that stores nothing, malformed and unknown ids, and that one user never reaches another's conversations."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import assert_error_envelope
from tests.support.conversations import (
    add_items,
    create_conversation,
    fresh_user,
    ids,
    list_page,
    user_message,
)
from tests.support.stack import Stack

ITEM_ID = re.compile(r"^msg_[a-z0-9]{16}$")
LIST_KEYS = {"object", "data", "first_id", "last_id", "has_more", "total", "total_count"}


# ---- items ---------------------------------------------------------------------------------------------------


def test_items_in_both_request_forms_come_back_in_openais_shape(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    conversation = create_conversation(http, headers)
    before = int(time.time())
    added = add_items(http, headers, conversation["id"], [
        {"role": "system", "content": "Be brief."},                                       # OpenAI's easy form
        {"type": "message", "role": "user", "content": [{"type": "text", "text": {"text": "Hi"}}]},  # original's
        {"type": "message", "role": "user", "content": [{"type": "input_text", "input_text": "again"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello!"}]},
        {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": '{"city": "Oslo"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "12C"},
    ])
    assert set(added) == {"object", "data", "first_id", "last_id", "has_more"}
    assert added["object"] == "list" and added["has_more"] is False
    data = added["data"]
    assert (added["first_id"], added["last_id"]) == (data[0]["id"], data[-1]["id"])
    for item in data:
        assert ITEM_ID.match(item["id"])
        assert item["object"] == "conversation.item" and item["status"] == "completed"
        assert before - 1 <= item["created_at"] <= time.time() + 1
    shapes = [{k: v for k, v in item.items() if k not in ("id", "object", "status", "created_at")} for item in data]
    assert shapes == [
        {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "Be brief."}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "again"}]},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "Hello!", "annotations": []}]},
        {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": '{"city": "Oslo"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "12C"},
    ]
    url = f"/v1/conversations/{conversation['id']}/items"
    assert list_page(http, headers, url, order="asc")["data"] == data
    for item in data:
        assert http.get(f"{url}/{item['id']}", headers=headers).json() == item


def test_openai_sdk_items_create_list_retrieve_delete(client: openai.OpenAI) -> None:
    conversation = client.conversations.create()
    added = client.conversations.items.create(
        conversation.id,
        items=[
            {"type": "message", "role": "user", "content": "What is 2+2?"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "4"}]},
        ],
    )
    assert [item.type for item in added.data] == ["message", "message"]
    user_item, assistant_item = added.data
    assert user_item.role == "user" and user_item.content[0].type == "input_text"
    assert user_item.content[0].text == "What is 2+2?"
    assert assistant_item.content[0].type == "output_text" and assistant_item.content[0].text == "4"

    listed = client.conversations.items.list(conversation.id)
    assert [item.id for item in listed.data] == [assistant_item.id, user_item.id]  # newest first, like OpenAI
    assert [item.id for item in client.conversations.items.list(conversation.id, order="asc", limit=1)] == [
        user_item.id, assistant_item.id]  # the SDK's auto-paging follows `after`

    assert client.conversations.items.retrieve(user_item.id, conversation_id=conversation.id).id == user_item.id
    after_delete = client.conversations.items.delete(user_item.id, conversation_id=conversation.id)
    assert after_delete.id == conversation.id and after_delete.object == "conversation"
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve(user_item.id, conversation_id=conversation.id)
    assert [item.id for item in client.conversations.items.list(conversation.id)] == [assistant_item.id]
    # The conversation's title came from the first user message.
    assert client.conversations.retrieve(conversation.id).model_extra["title"] == "What is 2+2?"


def test_item_list_pages_and_counts(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    conversation = create_conversation(http, headers)
    url = f"/v1/conversations/{conversation['id']}/items"
    empty = list_page(http, headers, url)
    assert empty == {"object": "list", "data": [], "has_more": False, "total": 0, "total_count": 0}

    added = [item["id"] for item in add_items(
        http, headers, conversation["id"], [user_message(str(i)) for i in range(5)])["data"]]
    newest_first = added[::-1]
    everything = list_page(http, headers, url)
    assert set(everything) == LIST_KEYS
    assert ids(everything) == newest_first and everything["total"] == everything["total_count"] == 5
    exactly = list_page(http, headers, url, limit=5)
    assert ids(exactly) == newest_first and exactly["has_more"] is False
    first = list_page(http, headers, url, limit=3)
    assert ids(first) == newest_first[:3] and first["has_more"] is True
    rest = list_page(http, headers, url, limit=3, after=first["last_id"])
    assert ids(rest) == newest_first[3:] and rest["has_more"] is False
    end = list_page(http, headers, url, after=rest["last_id"])
    assert end["data"] == [] and end["has_more"] is False
    assert ids(list_page(http, headers, url, order="asc", limit=2, offset=1)) == added[1:3]
    response = http.get(url, headers=headers, params={"limit": 101})
    assert_error_envelope(response, 400, type="invalid_request_error", param="limit")


def test_deleting_an_item_returns_the_conversation(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    conversation = create_conversation(http, headers, {"title": "Keep",
                                                       "items": [user_message("a"), user_message("b")]})
    url = f"/v1/conversations/{conversation['id']}/items"
    first, second = ids(list_page(http, headers, url, order="asc"))
    response = http.delete(f"{url}/{first}", headers=headers)
    assert response.status_code == 200 and response.json() == conversation
    assert ids(list_page(http, headers, url)) == [second]
    assert_error_envelope(http.delete(f"{url}/{first}", headers=headers), 404, type="not_found_error",
                          code="item_not_found")
    assert_error_envelope(http.get(f"{url}/msg_unknown000000000", headers=headers), 404, type="not_found_error",
                          code="item_not_found")


def test_an_untitled_conversation_is_titled_from_its_first_user_message(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    long_text = "Please help me plan a two week trip through the north of Norway in the middle of winter"
    created = create_conversation(http, headers, {"items": [{"role": "system", "content": "Be brief."},
                                                {"role": "user", "content": long_text}]})
    assert created["title"].startswith("Please help me plan") and len(created["title"]) <= 60

    untitled = create_conversation(http, headers, {"items": [{"role": "assistant", "content": "Hello"}]})
    assert "title" not in untitled
    add_items(http, headers, untitled["id"], [{"role": "user", "content": "Weekend in Oslo"}])
    assert http.get(f"/v1/conversations/{untitled['id']}", headers=headers).json()["title"] == "Weekend in Oslo"
    add_items(http, headers, untitled["id"], [{"role": "user", "content": "Something else"}])
    assert http.get(f"/v1/conversations/{untitled['id']}", headers=headers).json()["title"] == "Weekend in Oslo"

    titled = create_conversation(http, headers, {"title": "Mine", "items": [user_message("not the title")]})
    assert titled["title"] == "Mine"


def test_client_item_ids_are_kept_once(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    conversation = create_conversation(http, headers)
    item_id = f"msg_client{int(time.time() * 1000)}{conversation['id'][-6:]}"
    added = add_items(http, headers, conversation["id"], [{**user_message("x"), "id": item_id}])
    assert added["first_id"] == item_id
    again = http.post(f"/v1/conversations/{conversation['id']}/items", headers=headers,
                      json={"items": [user_message("y"), {**user_message("x"), "id": item_id}]})
    assert_error_envelope(again, 409, type="invalid_request_error", code="item_id_in_use", param="items[1].id")
    assert list_page(http, headers, f"/v1/conversations/{conversation['id']}/items")["total"] == 1
    bad = http.post(f"/v1/conversations/{conversation['id']}/items", headers=headers,
                    json={"items": [{**user_message("x"), "id": "item-1"}]})
    assert_error_envelope(bad, 400, type="invalid_request_error", param="items[0].id")


@pytest.mark.parametrize(
    ("items", "param"),
    [
        ([], "items"),
        (None, "items"),
        ([user_message("x")] * 21, "items"),
        ([user_message("x")] * 19 + [{"role": "robot", "content": "x"}], "items[19].role"),
        ([{"type": "telepathy"}], "items[0].type"),
        ([user_message("x"), {"role": "user", "content": [{"type": "input_text", "text": "a"},
                                                           {"type": "input_text"}]}], "items[1].content[1].text"),
        ([{"role": "user", "content": "x" * 100_001}], "items[0].content"),
        ([{"role": "user", "content": [{"type": "input_text", "text": "x"}] * 101}], "items[0].content"),
    ],
)
def test_invalid_items_store_nothing(stack: Stack, http: httpx.Client, items: Any, param: str) -> None:
    headers = fresh_user(stack)
    conversation = create_conversation(http, headers)
    url = f"/v1/conversations/{conversation['id']}/items"
    response = http.post(url, headers=headers, json={"items": items} if items is not None else {})
    assert_error_envelope(response, 400, type="invalid_request_error", param=param)
    assert list_page(http, headers, url)["total"] == 0
    if items:
        response = http.post("/v1/conversations", headers=headers, json={"items": items})
        assert_error_envelope(response, 400, type="invalid_request_error", param=param)
        assert list_page(http, headers)["total"] == 1  # the conversation created above, nothing more


@pytest.mark.parametrize(
    ("method", "path", "param"),
    [
        ("GET", "/v1/conversations/nope", "conversation_id"),
        ("POST", "/v1/conversations/conv_ABC", "conversation_id"),
        ("DELETE", "/v1/conversations/conv_", "conversation_id"),
        ("GET", "/v1/conversations/123/items", "conversation_id"),
        ("POST", "/v1/conversations/msg_abc/items", "conversation_id"),
        ("GET", "/v1/conversations/conv_abc/items/conv_abc", "item_id"),
        ("DELETE", "/v1/conversations/conv_abc/items/msg-1", "item_id"),
    ],
)
def test_malformed_ids_are_400s(stack: Stack, http: httpx.Client, method: str, path: str, param: str) -> None:
    response = http.request(method, path, headers=fresh_user(stack), json={"items": [user_message("x")]}
                            if method == "POST" else None)
    assert_error_envelope(response, 400, type="invalid_request_error", code="invalid_id", param=param)


def test_unknown_well_formed_ids_are_404s(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    url = "/v1/conversations/conv_doesnotexist0000"
    for response in (
        http.get(url, headers=headers),
        http.post(url, headers=headers, json={"title": "x"}),
        http.delete(url, headers=headers),
        http.get(f"{url}/items", headers=headers),
        http.post(f"{url}/items", headers=headers, json={"items": [user_message("x")]}),
        http.get(f"{url}/items/msg_doesnotexist000", headers=headers),
        http.delete(f"{url}/items/msg_doesnotexist000", headers=headers),
    ):
        assert_error_envelope(response, 404, type="not_found_error", code="conversation_not_found")


def test_anonymous_callers_are_401(http: httpx.Client) -> None:
    for response in (http.get("/v1/conversations"), http.post("/v1/conversations", json={})):
        assert_error_envelope(response, 401, type="auth_error")


# ---- isolation -----------------------------------------------------------------------------------------------


def test_another_users_conversations_and_items_do_not_exist(stack: Stack, http: httpx.Client) -> None:
    alice, bob = fresh_user(stack), fresh_user(stack)
    secret = create_conversation(http, alice, {"title": "Alice's", "referrer": "shared",
                                               "items": [user_message("private")]})
    url = f"/v1/conversations/{secret['id']}"
    item_id = list_page(http, alice, f"{url}/items")["first_id"]
    bobs = create_conversation(http, bob, {"referrer": "shared"})

    for response in (
        http.get(url, headers=bob),
        http.post(url, headers=bob, json={"title": "mine now"}),
        http.delete(url, headers=bob),
        http.get(f"{url}/items", headers=bob),
        http.post(f"{url}/items", headers=bob, json={"items": [user_message("injected")]}),
        http.get(f"{url}/items/{item_id}", headers=bob),
        http.delete(f"{url}/items/{item_id}", headers=bob),
    ):
        assert_error_envelope(response, 404, type="not_found_error", code="conversation_not_found")
    # Alice's item id inside Bob's own conversation is just as unknown.
    response = http.get(f"/v1/conversations/{bobs['id']}/items/{item_id}", headers=bob)
    assert_error_envelope(response, 404, type="not_found_error", code="item_not_found")
    response = http.delete(f"/v1/conversations/{bobs['id']}/items/{item_id}", headers=bob)
    assert_error_envelope(response, 404, type="not_found_error", code="item_not_found")

    # Never in Bob's lists, not even as a cursor.
    assert ids(list_page(http, bob)) == [bobs["id"]]
    assert ids(list_page(http, bob, referrer="shared")) == [bobs["id"]]
    response = http.get("/v1/conversations", headers=bob, params={"after": secret["id"]})
    assert_error_envelope(response, 400, type="invalid_request_error", param="after")
    response = http.get(f"/v1/conversations/{bobs['id']}/items", headers=bob, params={"after": item_id})
    assert_error_envelope(response, 400, type="invalid_request_error", param="after")

    # Alice's conversation is untouched.
    assert http.get(url, headers=alice).json() == secret
    assert ids(list_page(http, alice, f"{url}/items")) == [item_id]
