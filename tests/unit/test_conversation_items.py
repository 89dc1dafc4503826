"""Conversation items in every accepted form come out in OpenAI's shapes; bad ones are 400s naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from server.core.errors import ApiError
from server.llm.conversations.items import (
    MAX_ITEMS,
    MAX_PARTS,
    MAX_TEXT_CHARS,
    NewItem,
    first_user_text,
    parse_item,
    parse_items,
)


def _rejected(raw: Any, param: str) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse_items(raw)
    assert caught.value.status == 400
    assert caught.value.param == param, caught.value.message
    assert caught.value.message
    return caught.value


@pytest.mark.parametrize(
    "raw",
    [
        {"type": "message", "role": "user", "content": "Hello"},
        {"role": "user", "content": "Hello"},
        {"role": "user", "content": [{"type": "input_text", "text": "Hello"}]},
        {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
        {"role": "user", "content": [{"type": "text", "text": {"text": "Hello"}}]},
        {"role": "user", "content": [{"type": "input_text", "input_text": "Hello"}]},
        {"role": "user", "content": [{"type": "output_text", "text": "Hello", "annotations": []}]},
    ],
)
def test_user_text_in_every_form_becomes_input_text(raw: dict[str, Any]) -> None:
    assert parse_item(raw, "items[0]") == NewItem(
        type="message", role="user", content=[{"type": "input_text", "text": "Hello"}]
    )


@pytest.mark.parametrize("role", ["system", "developer"])
def test_system_and_developer_text_is_input_text(role: str) -> None:
    item = parse_item({"role": role, "content": "Be brief."}, "items[0]")
    assert item.content == [{"type": "input_text", "text": "Be brief."}]


@pytest.mark.parametrize(
    "content",
    [
        "Hi there",
        [{"type": "output_text", "text": "Hi there"}],
        [{"type": "input_text", "text": "Hi there"}],
        [{"type": "text", "text": {"text": "Hi there"}}],
        [{"type": "output_text", "output_text": {"text": "Hi there", "annotations": []}}],
    ],
)
def test_assistant_text_becomes_output_text_with_annotations(content: Any) -> None:
    item = parse_item({"type": "message", "role": "assistant", "content": content}, "items[0]")
    assert item.content == [{"type": "output_text", "text": "Hi there", "annotations": []}]


def test_output_text_annotations_are_kept() -> None:
    annotation = {"type": "url_citation", "url": "https://example.com", "start_index": 0, "end_index": 2}
    item = parse_item(
        {"role": "assistant", "content": [{"type": "output_text", "text": "Hi", "annotations": [annotation]}]}, "x"
    )
    assert item.content == [{"type": "output_text", "text": "Hi", "annotations": [annotation]}]


def test_refusal_and_images() -> None:
    assistant = parse_item({"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]}, "x")
    assert assistant.content == [{"type": "refusal", "refusal": "No."}]
    user = parse_item(
        {
            "role": "user",
            "content": [
                {"type": "input_image", "image_url": "https://example.com/a.png"},
                {"type": "input_image", "file_id": "file_1", "detail": "low"},
                {"type": "image", "image": {"url": "https://example.com/b.png", "detail": "high"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
        "x",
    )
    assert user.content == [
        {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "auto"},
        {"type": "input_image", "file_id": "file_1", "detail": "low"},
        {"type": "input_image", "image_url": "https://example.com/b.png", "detail": "high"},
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "auto"},
    ]


def test_function_call_and_output() -> None:
    call, output = parse_items(
        [
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Oslo"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "12C", "status": "completed"},
        ]
    )
    assert call == NewItem(type="function_call", call_id="call_1", name="get_weather", arguments='{"city":"Oslo"}')
    assert output == NewItem(type="function_call_output", call_id="call_1", output="12C")


def test_client_ids_and_status_are_kept() -> None:
    item = parse_item({"id": "msg_abc123", "role": "user", "content": "x", "status": "incomplete"}, "x")
    assert (item.id, item.status) == ("msg_abc123", "incomplete")


def test_first_user_text_joins_the_first_user_messages_text() -> None:
    items = parse_items(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "input_text", "text": "Plan"}, {"type": "text", "text": "a trip"}]},
            {"role": "user", "content": "later"},
        ]
    )
    assert first_user_text(items) == "Plan\na trip"
    assert first_user_text(parse_items([{"role": "assistant", "content": "Hi"}])) is None


LONG_TEXT = "x" * (MAX_TEXT_CHARS + 1)


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        ([], "items"),
        ("hello", "items"),
        ([{"role": "user", "content": "x"}] * (MAX_ITEMS + 1), "items"),
        (["hello"], "items[0]"),
        ([{"content": "x"}], "items[0].type"),
        ([{"type": "reasoning", "summary": []}], "items[0].type"),
        ([{"type": "message", "content": "x"}], "items[0].role"),
        ([{"role": "tool", "content": "x"}], "items[0].role"),
        ([{"role": "user"}], "items[0].content"),
        ([{"role": "user", "content": []}], "items[0].content"),
        ([{"role": "user", "content": 7}], "items[0].content"),
        ([{"role": "user", "content": [{"type": "input_text"}] * (MAX_PARTS + 1)}], "items[0].content"),
        ([{"role": "user", "content": LONG_TEXT}], "items[0].content"),
        ([{"role": "user", "content": ["x"]}], "items[0].content[0]"),
        ([{"role": "user", "content": [{"text": "x"}]}], "items[0].content[0].type"),
        ([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}], "items[0].content[0].type"),
        ([{"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text"}]}],
         "items[0].content[1].text"),
        ([{"role": "user", "content": [{"type": "input_text", "text": 5}]}], "items[0].content[0].text"),
        ([{"role": "user", "content": [{"type": "input_text", "text": LONG_TEXT}]}], "items[0].content[0].text"),
        ([{"role": "user", "content": [{"type": "text", "text": {}}]}], "items[0].content[0].text.text"),
        ([{"role": "user", "content": [{"type": "input_text", "input_text": 5}]}],
         "items[0].content[0].input_text"),
        ([{"role": "user", "content": [{"type": "refusal", "refusal": "no"}]}], "items[0].content[0].type"),
        ([{"role": "user", "content": [{"type": "input_image"}]}], "items[0].content[0].image_url"),
        ([{"role": "user", "content": [{"type": "input_image", "image_url": "u", "detail": "max"}]}],
         "items[0].content[0].detail"),
        ([{"role": "user", "content": [{"type": "image", "image": "u"}]}], "items[0].content[0].image"),
        ([{"type": "function_call", "name": "f", "arguments": "{}"}], "items[0].call_id"),
        ([{"type": "function_call", "call_id": "c", "arguments": "{}"}], "items[0].name"),
        ([{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}], "items[0].arguments"),
        ([{"type": "function_call_output", "call_id": "c"}], "items[0].output"),
        ([{"role": "user", "content": "x", "id": "conv_abc"}], "items[0].id"),
        ([{"role": "user", "content": "x", "id": "msg_ABC"}], "items[0].id"),
        ([{"role": "user", "content": "x", "status": "failed"}], "items[0].status"),
        ([{"role": "user", "content": "x", "id": "msg_a"}, {"role": "user", "content": "y", "id": "msg_a"}],
         "items[1].id"),
    ],
)
def test_invalid_items_are_400s_naming_the_field(raw: Any, param: str) -> None:
    _rejected(raw, param)


def test_twenty_items_pass_and_the_limits_are_inclusive() -> None:
    items = parse_items([{"role": "user", "content": [{"type": "input_text", "text": "x" * MAX_TEXT_CHARS}]}] * 20)
    assert len(items) == MAX_ITEMS
    parts = [{"type": "input_text", "text": "x"}] * MAX_PARTS
    assert len(parse_items([{"role": "user", "content": parts}])[0].content or []) == MAX_PARTS
