"""Chat request parsing and response encoding, without a model."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from server.core.errors import ApiError
from server.llm.backends.base import ChatMessage, Finish, TextDelta
from server.llm.backends.prompt import drop_history_to_fit
from server.llm.chat import _Completion, _no_conversation
from server.llm.chat_request import parse_chat_request


def _request(**fields: object) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}).encode()


def test_openai_options_become_sampling_params() -> None:
    request = parse_chat_request(_request(
        max_tokens=5, max_completion_tokens=7, temperature=0, top_p=0.5, stop="END", seed=3,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
        messages=[{"role": "developer", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
    ))
    assert request.sampling.max_tokens == 7  # max_completion_tokens wins, as in OpenAI's API
    assert request.sampling.stop == ("END",)
    assert request.sampling.json_schema == {"type": "object"} and not request.sampling.json_object
    assert request.messages[0].role == "system" and request.messages[0].content == "a\nb"


def test_integral_floats_count_as_integers_but_booleans_do_not() -> None:
    assert parse_chat_request(_request(n=1.0, max_tokens=4.0)).sampling.max_tokens == 4
    with pytest.raises(ApiError) as raised:
        parse_chat_request(_request(max_tokens=True))
    assert raised.value.param == "max_tokens"


def test_stream_options_need_stream() -> None:
    with pytest.raises(ApiError) as raised:
        parse_chat_request(_request(stream_options={"include_usage": True}))
    assert raised.value.status == 400 and raised.value.param == "stream_options"


def test_unsupported_parts_are_refused_clearly() -> None:
    body = _request(messages=[{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x"}}]}])
    with pytest.raises(ApiError) as raised:
        parse_chat_request(body)
    assert raised.value.code == "unsupported_content_type" and raised.value.param == "messages[0].content[0].type"


async def _events(*texts: str) -> AsyncIterator[TextDelta | Finish]:
    for text in texts:
        yield TextDelta(text)
    yield Finish("stop", 3, len(texts))


@pytest.mark.parametrize("include_usage", [False, True])
async def test_stream_chunks_round_trip_any_text(include_usage: bool) -> None:
    texts = ['"quoted"', "back\\slash", "new\nline", "é😀", "\u0000"]
    request = parse_chat_request(_request(stream=True, stream_options={"include_usage": include_usage}))
    events = _events(*texts)
    completion = _Completion(request, "chatcmpl-1", 5, _no_conversation)
    pieces = [p async for p in completion.stream(await anext(events), events)]
    assert pieces[-1] == b"data: [DONE]\n\n"
    chunks = [json.loads(p.removeprefix(b"data: ")) for p in pieces[:-1]]
    assert [c["choices"][0]["delta"].get("content") for c in chunks[: len(texts)]] == texts
    assert all(("usage" in c) == include_usage for c in chunks)
    assert chunks[len(texts)]["choices"][0]["finish_reason"] == "stop"


def test_conversation_is_an_id_or_an_object_and_store_defaults_to_true() -> None:
    assert parse_chat_request(_request(conversation="conv_abc")).conversation_id == "conv_abc"
    request = parse_chat_request(_request(conversation={"id": "conv_abc"}, store=False))
    assert request.conversation_id == "conv_abc" and request.store is False
    assert parse_chat_request(_request()).store is True
    for bad in (5, {"id": 5}):
        with pytest.raises(ApiError) as error:
            parse_chat_request(_request(conversation=bad))
        assert error.value.status == 400 and error.value.param.startswith("conversation")


def _numbered(count: int) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=f"m{index}") for index in range(count)]


def _one_token_per_message(messages: list[ChatMessage]) -> list[int]:
    return list(range(len(messages)))


def test_history_is_dropped_oldest_first_just_enough_to_fit() -> None:
    messages = [ChatMessage(role="system", content="be brief"), *_numbered(10), ChatMessage(role="user", content="q")]
    kept, tokens = drop_history_to_fit(messages, range(1, 11), _one_token_per_message, limit=5)
    assert [m.content for m in kept] == ["be brief", "m7", "m8", "m9", "q"] and len(tokens) == 5


def test_history_that_fits_or_cannot_help_is_left_to_the_caller() -> None:
    messages = _numbered(4)
    assert drop_history_to_fit(messages, range(0, 2), _one_token_per_message, limit=4)[0] == messages
    kept, tokens = drop_history_to_fit(messages, range(0, 2), _one_token_per_message, limit=1)
    assert [m.content for m in kept] == ["m2", "m3"] and len(tokens) == 2
