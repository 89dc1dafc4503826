"""Stored chat completions (OpenAI's `"store": true`): kept only when asked, then listed, read, re-tagged and
deleted through `/v1/chat/completions[/{id}[/messages]]`, by raw HTTP and by the openai SDK."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import MODEL, assert_error_envelope, guest_login
from tests.support.stack import Stack


def _chat(http: httpx.Client, headers: dict[str, str], **fields: Any) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, **fields}
    return http.post("/v1/chat/completions", headers=headers, json=body)


def _stored(http: httpx.Client, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = _chat(http, headers, store=True, **fields)
    assert response.status_code == 200, response.text
    return response.json()


def _list(http: httpx.Client, headers: dict[str, str], path: str = "/v1/chat/completions",
          **params: Any) -> dict[str, Any]:
    response = http.get(path, headers=headers, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def _ids(listed: dict[str, Any]) -> list[str]:
    return [entry["id"] for entry in listed["data"]]


def _streamed(http: httpx.Client, headers: dict[str, str], **fields: Any) -> tuple[str, str]:
    """Streams a completion; returns its id and the answer text put together from the chunks."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, "stream": True,
            **fields}
    with http.stream("POST", "/v1/chat/completions", headers=headers, json=body) as response:
        assert response.status_code == 200
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    return chunks[0]["id"], text


def test_an_explicit_store_true_keeps_the_completion_as_answered(
    http: httpx.Client, auth_headers: dict[str, str]
) -> None:
    completion = _stored(http, auth_headers, metadata={"topic": "greeting"})

    listed = _list(http, auth_headers)
    assert listed == {"object": "list", "data": [{**completion, "metadata": {"topic": "greeting"}}],
                      "first_id": completion["id"], "last_id": completion["id"], "has_more": False,
                      "total": 1, "total_count": 1}
    fetched = http.get(f"/v1/chat/completions/{completion['id']}", headers=auth_headers)
    assert fetched.status_code == 200, fetched.text
    assert fetched.json() == {**completion, "metadata": {"topic": "greeting"}}


def test_a_streamed_completion_is_stored_in_its_non_stream_form(
    http: httpx.Client, auth_headers: dict[str, str]
) -> None:
    completion_id, text = _streamed(http, auth_headers, store=True)

    stored = http.get(f"/v1/chat/completions/{completion_id}", headers=auth_headers).json()
    assert stored["object"] == "chat.completion" and stored["model"] == MODEL
    assert stored["choices"][0]["message"] == {"role": "assistant", "content": text, "refusal": None}
    assert stored["usage"]["completion_tokens"] > 0 and stored["metadata"] == {}


def test_nothing_is_stored_without_store_true(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    empty = {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False, "total": 0,
             "total_count": 0}
    assert _list(http, auth_headers) == empty

    for fields in ({}, {"store": False}):
        assert _chat(http, auth_headers, **fields).status_code == 200
    _streamed(http, auth_headers)
    # A completion that fails, and one whose client leaves mid-stream, are not stored either.
    assert _chat(http, auth_headers, store=True, model="no-such-model").status_code == 404
    with http.stream("POST", "/v1/chat/completions", headers=auth_headers, json={
        "model": MODEL, "messages": [{"role": "user", "content": "Write a long story."}], "max_tokens": 400,
        "stream": True, "store": True,
    }) as response:
        next(line for line in response.iter_lines() if line)

    assert _list(http, auth_headers) == empty


def test_list_pages_orders_and_filters(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    ids = [_stored(http, auth_headers, metadata={"batch": "b", "n": str(n)})["id"] for n in range(3)]

    first = _list(http, auth_headers, limit=2)  # oldest first by default, as in OpenAI's API
    assert (_ids(first), first["has_more"], first["total"], first["total_count"]) == (ids[:2], True, 3, 3)
    assert (first["first_id"], first["last_id"]) == (ids[0], ids[1])
    rest = _list(http, auth_headers, limit=2, after=first["last_id"])
    assert (_ids(rest), rest["has_more"]) == (ids[2:], False)
    assert _ids(_list(http, auth_headers, order="desc")) == ids[::-1]
    assert _ids(_list(http, auth_headers, model=MODEL)) == ids
    assert _list(http, auth_headers, model="another-model")["data"] == []
    assert _ids(_list(http, auth_headers, **{"metadata[n]": "1"})) == [ids[1]]
    assert _ids(_list(http, auth_headers, **{"metadata[batch]": "b", "metadata[n]": "2"})) == [ids[2]]
    assert _list(http, auth_headers, **{"metadata[n]": "7"})["total"] == 0
    # The original Jan gateway's prefix serves the same list.
    assert _ids(_list(http, auth_headers, "/llm/v1/chat/completions")) == ids

    for params, param in (({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"order": "up"}, "order"),
                          ({"after": "chatcmpl-unknown"}, "after")):
        response = http.get("/v1/chat/completions", headers=auth_headers, params=params)
        assert_error_envelope(response, 400, type="invalid_request_error", param=param)


def test_messages_are_the_request_messages_in_openai_shape(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Say"}, {"type": "text", "text": "hi."}]},
        {"role": "assistant", "content": "Hi!", "name": "bot"},
        {"role": "user", "content": "Again."},
    ]
    completion_id = _stored(http, auth_headers, messages=messages)["id"]
    path = f"/v1/chat/completions/{completion_id}/messages"

    listed = _list(http, auth_headers, path)
    assert listed["data"] == [
        {"id": f"{completion_id}-0", "role": "developer", "content": "Be brief.", "name": None,
         "content_parts": None},
        {"id": f"{completion_id}-1", "role": "user", "content": "Say\nhi.", "name": None,
         "content_parts": [{"type": "text", "text": "Say"}, {"type": "text", "text": "hi."}]},
        {"id": f"{completion_id}-2", "role": "assistant", "content": "Hi!", "name": "bot", "content_parts": None},
        {"id": f"{completion_id}-3", "role": "user", "content": "Again.", "name": None, "content_parts": None},
    ]
    assert (listed["total"], listed["has_more"]) == (4, False)
    page = _list(http, auth_headers, path, limit=2, after=f"{completion_id}-0")
    assert (_ids(page), page["has_more"]) == ([f"{completion_id}-1", f"{completion_id}-2"], True)
    assert _ids(_list(http, auth_headers, path, order="desc", limit=1)) == [f"{completion_id}-3"]
    assert _ids(_list(http, auth_headers, f"/llm{path}")) == _ids(listed)


def test_metadata_is_replaced_by_an_update(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    completion = _stored(http, auth_headers, metadata={"old": "1"})
    path = f"/v1/chat/completions/{completion['id']}"

    updated = http.post(path, headers=auth_headers, json={"metadata": {"reviewed": "yes"}})
    assert updated.status_code == 200, updated.text
    assert updated.json() == {**completion, "metadata": {"reviewed": "yes"}}
    assert http.get(path, headers=auth_headers).json()["metadata"] == {"reviewed": "yes"}
    cleared = http.post(f"/llm{path}", headers=auth_headers, json={"metadata": None})
    assert cleared.status_code == 200 and cleared.json()["metadata"] == {}

    assert_error_envelope(http.post(path, headers=auth_headers, json={}), 400, type="invalid_request_error",
                          code="missing_required_parameter", param="metadata")
    assert_error_envelope(http.post(path, headers=auth_headers, json={"metadata": {"k": 1}}), 400,
                          type="invalid_request_error", param="metadata")


def test_a_deleted_completion_is_gone(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    completion_id = _stored(http, auth_headers)["id"]
    path = f"/v1/chat/completions/{completion_id}"

    deleted = http.delete(path, headers=auth_headers)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"id": completion_id, "object": "chat.completion.deleted", "deleted": True}
    for response in (http.get(path, headers=auth_headers), http.get(f"{path}/messages", headers=auth_headers),
                     http.post(path, headers=auth_headers, json={"metadata": {}}),
                     http.delete(f"/llm{path}", headers=auth_headers)):
        assert_error_envelope(response, 404, type="not_found_error", code="chat_completion_not_found")
    assert _list(http, auth_headers)["data"] == []


def test_another_users_completions_do_not_exist(
    stack: Stack, http: httpx.Client, auth_headers: dict[str, str]
) -> None:
    completion_id = _stored(http, auth_headers)["id"]
    path = f"/v1/chat/completions/{completion_id}"
    other = {"Authorization": f"Bearer {guest_login(stack)['access_token']}"}

    for response in (http.get(path, headers=other), http.get(f"{path}/messages", headers=other),
                     http.post(path, headers=other, json={"metadata": {"x": "y"}}),
                     http.delete(path, headers=other)):
        error = assert_error_envelope(response, 404, type="not_found_error", code="chat_completion_not_found")
        assert completion_id in error["message"]
    assert _list(http, other)["data"] == []
    assert_error_envelope(http.get("/v1/chat/completions", headers=other, params={"after": completion_id}), 400,
                          type="invalid_request_error", param="after")
    assert http.get(path, headers=auth_headers).json()["metadata"] == {}
    assert_error_envelope(http.get("/v1/chat/completions"), 401, type="auth_error")


def test_a_stored_completion_keeps_its_conversation(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    conversation = http.post("/v1/conversations", headers=auth_headers, json={}).json()

    completion = _stored(http, auth_headers, conversation=conversation["id"])

    assert completion["conversation"]["id"] == conversation["id"]
    stored = http.get(f"/v1/chat/completions/{completion['id']}", headers=auth_headers).json()
    assert stored["conversation"] == completion["conversation"]
    items = http.get(f"/v1/conversations/{conversation['id']}/items", headers=auth_headers).json()["data"]
    assert len(items) == 2


@pytest.mark.parametrize("stream", [False, True])
def test_openai_sdk_manages_stored_completions(client: openai.OpenAI, stream: bool) -> None:
    request: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}],
                               "max_tokens": 4, "store": True, "metadata": {"sdk": "yes"}}
    if stream:
        # Read to the end: a client that leaves mid-stream stores nothing.
        completion_id = {chunk.id for chunk in client.chat.completions.create(stream=True, **request)}.pop()
    else:
        completion_id = client.chat.completions.create(**request).id

    page = client.chat.completions.list(metadata={"sdk": "yes"}, model=MODEL)
    assert [c.id for c in page.data] == [completion_id]
    retrieved = client.chat.completions.retrieve(completion_id)
    assert retrieved.id == completion_id and retrieved.choices[0].message.role == "assistant"
    messages = client.chat.completions.messages.list(completion_id)
    assert [(m.id, m.role, m.content) for m in messages.data] == [(f"{completion_id}-0", "user", "Say hi.")]
    updated = client.chat.completions.update(completion_id, metadata={"sdk": "updated"})
    assert updated.metadata == {"sdk": "updated"}
    deleted = client.chat.completions.delete(completion_id)
    assert (deleted.id, deleted.deleted, deleted.object) == (completion_id, True, "chat.completion.deleted")
    assert list(client.chat.completions.list()) == []
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.retrieve(completion_id)
