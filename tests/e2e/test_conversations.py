"""The Conversations API through Envoy (README §Conversations): OpenAI's conversation object plus the original's
title, project_id and referrer; both request forms; lenient JSON bodies; paging and filters.
Items, ids and two-user isolation: test_conversation_items.py."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import assert_error_envelope
from tests.support.conversations import (
    create_conversation,
    fresh_user,
    ids,
    list_page,
    user_message,
)
from tests.support.stack import Stack

CONVERSATION_ID = re.compile(r"^conv_[a-z0-9]{16}$")
LIST_KEYS = {"object", "data", "first_id", "last_id", "has_more", "total", "total_count"}


# ---- conversations -------------------------------------------------------------------------------------------


def test_create_answers_openais_conversation_plus_the_originals_fields(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    before = int(time.time())
    body = create_conversation(http, headers, {"title": "Trip planning", "metadata": {"topic": "travel"},
                                               "referrer": "web"})
    assert set(body) == {"id", "object", "created_at", "title", "metadata", "referrer"}
    assert CONVERSATION_ID.match(body["id"])
    assert body["object"] == "conversation"
    assert before - 1 <= body["created_at"] <= time.time() + 1
    assert (body["title"], body["metadata"], body["referrer"]) == ("Trip planning", {"topic": "travel"}, "web")

    fetched = http.get(f"/v1/conversations/{body['id']}", headers=headers)
    assert fetched.status_code == 200 and fetched.json() == body


def test_an_empty_create_omits_unset_fields_and_prints_empty_metadata(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    response = http.post("/v1/conversations", headers=headers)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"id", "object", "created_at", "metadata"}
    assert response.json()["metadata"] == {}


def test_openai_sdk_create_retrieve_update_delete(client: openai.OpenAI) -> None:
    created = client.conversations.create(
        metadata={"source": "sdk"}, items=[{"type": "message", "role": "user", "content": "Hello from the SDK"}]
    )
    assert created.object == "conversation" and CONVERSATION_ID.match(created.id)
    assert created.metadata == {"source": "sdk"}
    assert isinstance(created.created_at, int)
    assert created.model_extra and created.model_extra["title"] == "Hello from the SDK"

    assert client.conversations.retrieve(created.id).id == created.id
    updated = client.conversations.update(created.id, metadata={"source": "sdk", "step": "2"})
    assert updated.metadata == {"source": "sdk", "step": "2"}

    deleted = client.conversations.delete(created.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (created.id, "conversation.deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(created.id)


def test_every_endpoint_answers_under_the_llm_prefix(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    conversation = create_conversation(http, headers, {"title": "prefixed"}, path="/llm/v1/conversations")
    base = f"/llm/v1/conversations/{conversation['id']}"
    assert http.get(base, headers=headers).json()["title"] == "prefixed"
    assert http.post(base, headers=headers, json={"title": "renamed"}).json()["title"] == "renamed"
    assert ids(list_page(http, headers, "/llm/v1/conversations")) == [conversation["id"]]
    added = http.post(f"{base}/items", headers=headers, json={"items": [user_message("hi")]})
    assert added.status_code == 200, added.text
    item_id = added.json()["first_id"]
    assert ids(list_page(http, headers, f"{base}/items")) == [item_id]
    assert http.get(f"{base}/items/{item_id}", headers=headers).json()["id"] == item_id
    assert http.delete(f"{base}/items/{item_id}", headers=headers).json()["id"] == conversation["id"]
    assert http.delete(base, headers=headers).json()["deleted"] is True


def test_update_changes_only_the_fields_given(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    conversation = create_conversation(http, headers, {"title": "Old", "metadata": {"a": "1", "b": "2"},
                                                       "referrer": "web"})
    url = f"/v1/conversations/{conversation['id']}"

    renamed = http.post(url, headers=headers, json={"title": "New"}).json()
    assert renamed == {**conversation, "title": "New"}

    # metadata is replaced as a whole, as OpenAI does
    replaced = http.post(url, headers=headers, json={"metadata": {"c": "3"}, "referrer": "cli"}).json()
    assert replaced == {**conversation, "title": "New", "metadata": {"c": "3"}, "referrer": "cli"}

    cleared = http.post(url, headers=headers, json={"title": None, "metadata": None, "referrer": ""}).json()
    assert set(cleared) == {"id", "object", "created_at", "metadata"} and cleared["metadata"] == {}


def test_project_id_attaches_detaches_and_filters(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    project = http.post("/v1/projects", headers=headers, json={"name": "Research"})
    assert project.status_code == 201, project.text
    project_id = project.json()["id"]

    inside = create_conversation(http, headers, {"project_id": project_id})
    outside = create_conversation(http, headers)
    assert inside["project_id"] == project_id and "project_id" not in outside
    assert ids(list_page(http, headers, project_id=project_id)) == [inside["id"]]

    attached = http.post(f"/v1/conversations/{outside['id']}", headers=headers, json={"project_id": project_id})
    assert attached.status_code == 200 and attached.json()["project_id"] == project_id
    assert list_page(http, headers, project_id=project_id)["total"] == 2

    for detach in (None, ""):
        detached = http.post(f"/v1/conversations/{inside['id']}", headers=headers, json={"project_id": detach})
        assert detached.status_code == 200 and "project_id" not in detached.json()
    assert ids(list_page(http, headers, project_id=project_id)) == [outside["id"]]

    # Deleting the project detaches its conversations; they keep existing.
    assert http.delete(f"/v1/projects/{project_id}", headers=headers).status_code in (200, 204)
    remaining = http.get(f"/v1/conversations/{outside['id']}", headers=headers)
    assert remaining.status_code == 200 and "project_id" not in remaining.json()


def test_project_id_must_name_one_of_the_callers_projects(stack: Stack, http: httpx.Client) -> None:
    owner, other = fresh_user(stack), fresh_user(stack)
    foreign = http.post("/v1/projects", headers=owner, json={"name": "Mine"}).json()["id"]
    before = list_page(http, other)["total"]
    for project_id in (foreign, "proj_doesnotexist0000"):
        response = http.post("/v1/conversations", headers=other, json={"project_id": project_id})
        assert_error_envelope(response, 404, type="not_found_error", code="project_not_found", param="project_id")
    response = http.post("/v1/conversations", headers=other, json={"project_id": "project-1"})
    assert_error_envelope(response, 400, type="invalid_request_error", param="project_id")
    assert list_page(http, other)["total"] == before

    conversation = create_conversation(http, other)
    response = http.post(f"/v1/conversations/{conversation['id']}", headers=other, json={"project_id": foreign})
    assert_error_envelope(response, 404, type="not_found_error", param="project_id")
    assert "project_id" not in http.get(f"/v1/conversations/{conversation['id']}", headers=other).json()


def test_delete_is_final_and_takes_the_items_along(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    conversation = create_conversation(http, headers, {"items": [user_message("one"), user_message("two")]})
    url = f"/v1/conversations/{conversation['id']}"
    item_id = list_page(http, headers, f"{url}/items")["first_id"]

    deleted = http.delete(url, headers=headers)
    assert deleted.status_code == 200
    assert deleted.json() == {"id": conversation["id"], "object": "conversation.deleted", "deleted": True}
    for response in (
        http.get(url, headers=headers),
        http.delete(url, headers=headers),
        http.get(f"{url}/items", headers=headers),
        http.get(f"{url}/items/{item_id}", headers=headers),
    ):
        assert_error_envelope(response, 404, type="not_found_error", code="conversation_not_found")
    assert list_page(http, headers)["total"] == 0


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"title": "t" * 257}, "title"),
        ({"title": 5}, "title"),
        ({"referrer": "r" * 65}, "referrer"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k": 1}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata.k"),
        ({"items": "hello"}, "items"),
        ({"items": [user_message("x")] * 21}, "items"),
    ],
)
def test_invalid_conversation_fields_are_400s_naming_the_field(
    stack: Stack, http: httpx.Client, body: dict[str, Any], param: str
) -> None:
    headers = fresh_user(stack)
    response = http.post("/v1/conversations", headers=headers, json=body)
    assert_error_envelope(response, 400, type="invalid_request_error", param=param)
    conversation = create_conversation(http, headers)
    response = http.post(f"/v1/conversations/{conversation['id']}", headers=headers, json=body)
    if "items" not in body:  # updates take no items
        assert_error_envelope(response, 400, type="invalid_request_error", param=param)
    assert list_page(http, headers)["total"] == 1


def test_limits_are_inclusive(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    body = {
        "title": "t" * 256,
        "referrer": "r" * 64,
        "metadata": {f"k{i}": "v" * 512 for i in range(16)},
        "items": [user_message("x")] * 20,
    }
    conversation = create_conversation(http, headers, body)
    assert len(conversation["title"]) == 256 and len(conversation["metadata"]) == 16
    assert list_page(http, headers, f"/v1/conversations/{conversation['id']}/items")["total"] == 20


# ---- JSON bodies ---------------------------------------------------------------------------------------------


def test_trailing_garbage_after_one_json_object_is_ignored(stack: Stack, http: httpx.Client) -> None:
    headers = {**fresh_user(stack), "Content-Type": "application/json"}
    response = http.post("/v1/conversations", headers=headers, content=b'{"title": "kept"} trailing}}garbage')
    assert response.status_code == 200, response.text
    assert response.json()["title"] == "kept"
    items = http.post(
        f"/v1/conversations/{response.json()['id']}/items",
        headers=headers,
        content=b'{"items": [{"role": "user", "content": "hi"}]}\n{"items": []}',
    )
    assert items.status_code == 200, items.text
    assert len(items.json()["data"]) == 1


@pytest.mark.parametrize("body", [b'{"title": ', b"not json", b"[1, 2]", b'"title"'])
def test_malformed_json_is_a_400(stack: Stack, http: httpx.Client, body: bytes) -> None:
    headers = {**fresh_user(stack), "Content-Type": "application/json"}
    response = http.post("/v1/conversations", headers=headers, content=body)
    assert_error_envelope(response, 400, type="invalid_request_error", code="invalid_json")
    assert list_page(http, headers)["total"] == 0


# ---- listing conversations -----------------------------------------------------------------------------------


def test_an_empty_list(stack: Stack, http: httpx.Client) -> None:
    page = list_page(http, fresh_user(stack))
    assert page == {"object": "list", "data": [], "has_more": False, "total": 0, "total_count": 0}


def test_list_pages_newest_first_by_cursor_and_by_offset(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    created = [create_conversation(http, headers, {"title": f"c{i}"})["id"] for i in range(5)]
    newest_first = created[::-1]

    everything = list_page(http, headers)
    assert set(everything) == LIST_KEYS
    assert ids(everything) == newest_first
    assert (everything["first_id"], everything["last_id"]) == (newest_first[0], newest_first[-1])
    assert everything["has_more"] is False and everything["total"] == everything["total_count"] == 5

    exactly = list_page(http, headers, limit=5)
    assert ids(exactly) == newest_first and exactly["has_more"] is False

    first = list_page(http, headers, limit=2)
    assert ids(first) == newest_first[:2] and first["has_more"] is True and first["total"] == 5
    second = list_page(http, headers, limit=2, after=first["last_id"])
    assert ids(second) == newest_first[2:4] and second["has_more"] is True
    third = list_page(http, headers, limit=2, cursor=second["last_id"])
    assert ids(third) == newest_first[4:] and third["has_more"] is False
    beyond = list_page(http, headers, limit=2, after=third["last_id"])
    assert beyond["data"] == [] and beyond["has_more"] is False and beyond["total"] == 5
    assert "first_id" not in beyond and "last_id" not in beyond

    assert ids(list_page(http, headers, order="asc")) == created
    assert ids(list_page(http, headers, order="asc", limit=2, after=created[1])) == created[2:4]
    offset = list_page(http, headers, limit=2, offset=2)
    assert ids(offset) == newest_first[2:4] and offset["has_more"] is True
    assert ids(list_page(http, headers, limit=10, offset=4)) == newest_first[4:]
    assert list_page(http, headers, limit=10, offset=20)["data"] == []


def test_list_filters_by_referrer(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    web = create_conversation(http, headers, {"referrer": "web"})["id"]
    create_conversation(http, headers, {"referrer": "cli"})
    create_conversation(http, headers)
    page = list_page(http, headers, referrer="web")
    assert ids(page) == [web] and page["total"] == 1
    assert list_page(http, headers, referrer="nowhere")["total"] == 0


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"order": "sideways"}, "order"),
        ({"after": "conv_unknown0000000000"}, "after"),
        ({"after": "conv_a", "offset": 2}, "offset"),
        ({"project_id": "not-a-project"}, "project_id"),
    ],
)
def test_invalid_list_parameters_are_400s(stack: Stack, http: httpx.Client, params: dict[str, Any],
                                          param: str) -> None:
    response = http.get("/v1/conversations", headers=fresh_user(stack), params=params)
    assert_error_envelope(response, 400, type="invalid_request_error", param=param)
