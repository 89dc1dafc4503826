"""Chat request parsing and response encoding, without a model."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from server.core.errors import ApiError
from server.llm.backends.base import Finish, TextDelta
from server.llm.chat import _Completion
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


def test_image_parts_are_refused_clearly() -> None:
    body = _request(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])
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
    pieces = [p async for p in _Completion(request, "chatcmpl-1", 5).stream(await anext(events), events)]
    assert pieces[-1] == b"data: [DONE]\n\n"
    chunks = [json.loads(p.removeprefix(b"data: ")) for p in pieces[:-1]]
    assert [c["choices"][0]["delta"].get("content") for c in chunks[: len(texts)]] == texts
    assert all(("usage" in c) == include_usage for c in chunks)
    assert chunks[len(texts)]["choices"][0]["finish_reason"] == "stop"
