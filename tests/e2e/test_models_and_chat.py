"""Models and chat completions through Envoy with the `openai` SDK and raw HTTP (README §Models and chat).

The model is a real 135M model on the CPU: tests check shape and behaviour, never the words it says.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.e2e.conftest import MODEL
from tests.support.stack import Stack

HELLO = [{"role": "user", "content": "Say hello."}]


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    model = models.data[0]
    assert model.object == "model"
    assert isinstance(model.created, int) and model.created > 0
    assert model.owned_by
    assert client.models.retrieve(MODEL).id == MODEL
    assert client.models.retrieve(MODEL).created == model.created


def test_model_ids_with_slashes_reach_the_server_decoded(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client.models.retrieve("meta-llama/Llama-3-8B")
    assert raised.value.code == "model_not_found"
    assert "meta-llama/Llama-3-8B" in raised.value.message


def test_chat_completion(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=16)
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == MODEL
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 16
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_max_tokens_and_max_completion_tokens_cut_with_length(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Write a long story about a dragon."}]
    for limit in ({"max_tokens": 3}, {"max_completion_tokens": 3}):
        completion = client.chat.completions.create(model=MODEL, messages=messages, temperature=0, **limit)
        assert completion.choices[0].finish_reason == "length"
        assert completion.usage is not None and completion.usage.completion_tokens == 3


def test_streaming_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=12, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes in (["stop"], ["length"])
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert 0 < usage_chunk.usage.completion_tokens <= 12


def test_stream_bytes_are_openai_sse(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 5, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body, headers=auth_headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        raw = b"".join(response.iter_bytes())
    events = raw.split(b"\n\n")
    assert events[-1] == b"" and events[-2] == b"data: [DONE]"
    payloads = [json.loads(e.removeprefix(b"data: ")) for e in events[:-2]]
    assert all(e.startswith(b"data: {") for e in events[:-2])
    assert payloads[0]["choices"][0]["delta"]["role"] == "assistant"
    assert payloads[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert "usage" not in payloads[0]


def test_content_parts_roles_and_sampling_options_are_accepted(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in one word."}]},
            {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
                                                                     "function": {"name": "w", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "user", "content": "So?"},
        ],
        temperature=0.5, top_p=0.9, presence_penalty=0.5, frequency_penalty=0.5, stop=["\n\n", "###"],
        seed=7, user="user-1", metadata={"purpose": "test"}, max_tokens=8,
        extra_body={"an_unknown_field": {"is": "ignored"}},
    )
    assert completion.choices[0].finish_reason in ("stop", "length")


def test_stop_sequences_are_never_emitted(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Count from 1 to 20 separated by spaces."}],
        temperature=0, max_tokens=40, stop=["5"],
    )
    assert "5" not in (completion.choices[0].message.content or "")


def test_same_seed_same_text(client: openai.OpenAI) -> None:
    def run() -> str:
        completion = client.chat.completions.create(model=MODEL, messages=HELLO, temperature=1.0, seed=1234,
                                                    max_tokens=12)
        return completion.choices[0].message.content or ""

    assert run() == run()


def test_json_object_response_format(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Give me a JSON object describing a cat."}],
        response_format={"type": "json_object"}, max_tokens=60, temperature=0,
    )
    if completion.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(completion.choices[0].message.content or ""), dict)


def test_json_schema_response_format_is_enforced(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "John is 42. Extract name and age."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}},
        max_tokens=60, temperature=0,
    )
    assert completion.choices[0].finish_reason == "stop"
    person = json.loads(completion.choices[0].message.content or "")
    assert set(person) == {"name", "age"}
    assert isinstance(person["name"], str) and isinstance(person["age"], int)


def test_llm_prefixed_aliases(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    assert http.get("/llm/v1/models", headers=auth_headers).json()["data"][0]["id"] == MODEL
    response = http.post("/llm/v1/chat/completions", headers=auth_headers,
                         json={"model": MODEL, "messages": HELLO, "max_tokens": 2})
    assert response.json()["object"] == "chat.completion"


def test_every_response_carries_a_request_id(stack: Stack, http: httpx.Client, auth_headers: dict[str, str]) -> None:
    assert http.get("/v1/models", headers=auth_headers).headers["x-request-id"]
