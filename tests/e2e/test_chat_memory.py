"""Chat completions that continue a stored conversation: history and project instruction in the prompt, the new
turn and the answer appended, a title given, and nothing appended when the completion does not finish."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import MODEL, assert_error_envelope, guest_login
from tests.support.conversations import create_conversation, list_page
from tests.support.stack import Stack

QUESTION = "What is the capital of France?"


def _items_of(http: httpx.Client, headers: dict[str, str], conversation_id: str) -> list[dict[str, Any]]:
    page = list_page(http, headers, f"/v1/conversations/{conversation_id}/items", order="asc")
    return list(page["data"])


def _chat(http: httpx.Client, headers: dict[str, str], timeout: float = 60, **fields: Any) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 8, "temperature": 0,
            **fields}
    return http.post("/v1/chat/completions", headers=headers, json=body, timeout=timeout)


def _message(role: str, text: str) -> dict[str, Any]:
    part = "output_text" if role == "assistant" else "input_text"
    return {"type": "message", "role": role, "content": [{"type": part, "text": text}]}


def _text(item: dict[str, Any]) -> str:
    return "".join(part["text"] for part in item["content"])


def test_history_is_in_the_prompt_and_the_turn_is_appended(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    history = [_message("user", "My name is Ada and I live in Lyon."), _message("assistant", "Nice to meet you, Ada!")]
    conversation = create_conversation(http, auth_headers, {"items": history})
    plain = _chat(http, auth_headers).json()

    reply = _chat(http, auth_headers, conversation=conversation["id"])

    assert reply.status_code == 200, reply.text
    completion = reply.json()
    # The stored exchange was replayed before the question: the prompt grew by it.
    assert completion["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"] + 15
    assert completion["conversation"]["id"] == conversation["id"]
    items = _items_of(http, auth_headers, conversation["id"])
    assert [(item["role"], _text(item)) for item in items[2:]] == [
        ("user", QUESTION), ("assistant", completion["choices"][0]["message"]["content"])
    ]
    assert items[3]["content"][0]["type"] == "output_text"


def test_conversation_as_object_and_title_from_first_user_message(
    http: httpx.Client, auth_headers: dict[str, str]
) -> None:
    conversation = create_conversation(http, auth_headers)
    long_question = "Please explain in simple words how the tides of the oceans are caused by the moon and sun"

    completion = _chat(http, auth_headers, conversation={"id": conversation["id"]},
                       messages=[{"role": "user", "content": long_question}]).json()

    title = completion["conversation"]["title"]
    assert long_question.startswith(title.removesuffix("...")) and title.endswith("...") and len(title) <= 60
    assert http.get(f"/v1/conversations/{conversation['id']}", headers=auth_headers).json()["title"] == title


def test_project_instruction_is_the_system_message(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    # Longer than the model's default system prompt, which it uses when no system message is given.
    instruction = ("You are a pirate captain sailing the seven seas. Answer every question like a pirate would, "
                   "with lots of nautical slang, talk of treasure maps, parrots, rum, cannons and the open ocean, "
                   "and always end with a hearty pirate laugh.")
    project = http.post("/v1/projects", headers=auth_headers, json={"name": "pirates", "instruction": instruction})
    assert project.status_code == 201, project.text
    in_project = create_conversation(http, auth_headers, {"project_id": project.json()["id"]})
    outside = create_conversation(http, auth_headers)

    with_instruction = _chat(http, auth_headers, conversation=in_project["id"]).json()
    without = _chat(http, auth_headers, conversation=outside["id"]).json()

    assert with_instruction["usage"]["prompt_tokens"] > without["usage"]["prompt_tokens"] + 15


def test_streaming_ends_with_the_conversation_chunk(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    conversation = create_conversation(http, auth_headers, {"title": "kept title"})
    with http.stream("POST", "/v1/chat/completions", headers=auth_headers, json={
        "model": MODEL, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 8, "stream": True,
        "conversation": conversation["id"],
    }) as response:
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line]

    assert events[-1] == "[DONE]"
    last = json.loads(events[-2])
    assert last["object"] == "chat.completion.chunk" and last["choices"] == []
    assert last["conversation"] == {"id": conversation["id"], "title": "kept title"}
    answer = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-2]
                     if json.loads(e)["choices"])
    assert [_text(item) for item in _items_of(http, auth_headers, conversation["id"])] == [QUESTION, answer]


def test_store_false_reads_history_but_appends_nothing(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    conversation = create_conversation(http, auth_headers, {"items": [_message("user", "hello")]})

    completion = _chat(http, auth_headers, conversation=conversation["id"], store=False).json()

    assert completion["conversation"]["id"] == conversation["id"]
    assert len(_items_of(http, auth_headers, conversation["id"])) == 1


def test_history_longer_than_the_context_is_trimmed_not_an_error(
    http: httpx.Client, auth_headers: dict[str, str]
) -> None:
    paragraph = "The quick brown fox jumps over the lazy dog near the river bank. " * 60  # ~800 tokens
    items = [_message("user", paragraph), _message("assistant", "Noted."),
             _message("user", paragraph), _message("assistant", "Noted again."),
             _message("user", paragraph), _message("assistant", "Noted a third time.")]
    conversation = create_conversation(http, auth_headers, {"items": items})

    # A ~1,700-token prefill: seconds on an idle machine, minutes when other suites load the cores.
    reply = _chat(http, auth_headers, timeout=300, conversation=conversation["id"])

    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["prompt_tokens"] < 2048
    assert len(_items_of(http, auth_headers, conversation["id"])) == len(items) + 2


def test_failed_completions_append_nothing(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    conversation = create_conversation(http, auth_headers, {"items": [_message("user", "hello")]})

    assert_error_envelope(_chat(http, auth_headers, conversation=conversation["id"], model="no-such-model"),
                          404, type="not_found_error", code="model_not_found")
    assert_error_envelope(_chat(http, auth_headers, conversation=conversation["id"], temperature=9),
                          400, type="invalid_request_error", param="temperature")
    # A client that goes away mid-stream: generation stops and no half answer is stored.
    with http.stream("POST", "/v1/chat/completions", headers=auth_headers, json={
        "model": MODEL, "messages": [{"role": "user", "content": "Write a long story."}], "max_tokens": 400,
        "stream": True, "conversation": conversation["id"],
    }) as response:
        next(line for line in response.iter_lines() if line)

    assert len(_items_of(http, auth_headers, conversation["id"])) == 1


def test_unknown_or_foreign_conversation_is_404(stack: Stack, http: httpx.Client, auth_headers: dict[str, str]) -> None:
    other = {"Authorization": f"Bearer {guest_login(stack)['access_token']}"}
    foreign = create_conversation(http, other)

    for conversation_id in (foreign["id"], "conv_doesnotexist00"):
        error = assert_error_envelope(_chat(http, auth_headers, conversation=conversation_id), 404,
                                      type="not_found_error", code="conversation_not_found", param="conversation")
        assert conversation_id in error["message"]
    assert _items_of(http, other, foreign["id"]) == []


@pytest.mark.parametrize("stream", [False, True])
def test_openai_sdk_continues_a_conversation(
    http: httpx.Client, auth_headers: dict[str, str], client: openai.OpenAI, stream: bool
) -> None:
    conversation = create_conversation(http, auth_headers)
    request = {"model": MODEL, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 8,
               "extra_body": {"conversation": conversation["id"]}}

    if stream:
        chunks = list(client.chat.completions.create(stream=True, **request))
        attached = chunks[-1].model_extra["conversation"]
    else:
        attached = client.chat.completions.create(**request).model_extra["conversation"]

    assert attached["id"] == conversation["id"] and attached["title"] == QUESTION
    assert len(_items_of(http, auth_headers, conversation["id"])) == 2
