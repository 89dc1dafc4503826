"""Tool calling and image parts at the chat completions level: request parsing, the OpenAI answer shapes, and what a
backend receives. The backend is a test double that records its input and replays scripted events."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Callable
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.auth.store import User
from server.core.errors import ApiError
from server.llm.backends.base import (
    BackendInfo,
    ChatMessage,
    Finish,
    GenerationEvent,
    InferenceBackend,
    NamedTool,
    SamplingParams,
    TextDelta,
    ToolCall,
)
from server.llm.catalog.router import Route
from server.llm.chat import ChatCompletions
from server.llm.chat_request import parse_chat_request
from server.llm.completions.service import StoredCompletions
from server.llm.conversations.service import ConversationService
from server.llm.memory import ConversationMemory

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
PIXEL = "data:image/png;base64,iVBORw0KGgo="


class RecordingBackend(InferenceBackend):
    """Test double of the backend interface: records what it was asked, answers with scripted events."""

    def __init__(self, events: list[GenerationEvent], *, vision: bool = False, image_input: str = "data_url") -> None:
        self.info = BackendInfo("m", "test", 0, 4096, vision=vision, image_input=image_input)  # type: ignore[arg-type]
        self.events = events
        self.calls: list[tuple[list[ChatMessage], SamplingParams]] = []

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    @property
    def ready(self) -> bool:
        return True

    async def generate(
        self, messages: list[ChatMessage], params: SamplingParams, history: range = range(0)
    ) -> AsyncGenerator[GenerationEvent, None]:
        self.calls.append((messages, params))
        for event in self.events:
            yield event


def _only(backend: RecordingBackend) -> Callable[[str], Route]:
    """Routes every model id to the backend."""
    return lambda model_id: Route(model_id, backend, "settings", "test", "test", created=0)


def _chat(backend: RecordingBackend, resolver: Any = None) -> ChatCompletions:
    sessions = async_sessionmaker()  # never used: these requests neither store nor continue a conversation
    return ChatCompletions(_only(backend), ConversationMemory(sessions), StoredCompletions(sessions), resolver)


async def _answer(chat: ChatCompletions, user_id: str = "user-1", **fields: Any) -> list[bytes]:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    return [piece async for _, piece in chat.create(json.dumps(body).encode(), user_id)]


def _request(**fields: Any) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}).encode()


CALLS = [ToolCall("call_1", "get_weather", '{"city": "Paris"}'), ToolCall("call_2", "get_weather", '{"city": "Oslo"}')]


def test_tools_and_choices_are_parsed() -> None:
    sampling = parse_chat_request(_request(tools=[WEATHER])).sampling
    assert sampling.tools[0].name == "get_weather" and sampling.tools[0].parameters["required"] == ["city"]
    assert sampling.tool_choice == "auto" and sampling.parallel_tool_calls and sampling.tools_enabled
    named = {"type": "function", "function": {"name": "get_weather"}}
    sampling = parse_chat_request(_request(tools=[WEATHER], tool_choice=named, parallel_tool_calls=False)).sampling
    assert sampling.tool_choice == NamedTool("get_weather") and not sampling.parallel_tool_calls
    assert not parse_chat_request(_request(tools=[WEATHER], tool_choice="none")).sampling.tools_enabled
    bare = {"type": "function", "function": {"name": "now"}}
    assert parse_chat_request(_request(tools=[bare])).sampling.tools[0].parameters["type"] == "object"


def _tool(**function: Any) -> dict[str, Any]:
    return {"type": "function", "function": {**WEATHER["function"], **function}}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": {"a": 1}}, "tools"),
        ({"tools": [_tool()] * 129}, "tools"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
        ({"tools": [{"type": "function"}]}, "tools[0].function"),
        ({"tools": [_tool(name="has space")]}, "tools[0].function.name"),
        ({"tools": [_tool(name="x" * 65)]}, "tools[0].function.name"),
        ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name"),
        ({"tools": [_tool(parameters={"type": "string"})]}, "tools[0].function.parameters"),
        ({"tools": [_tool(parameters=[1])]}, "tools[0].function.parameters"),
        ({"tools": [_tool(description=5)]}, "tools[0].function.description"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "other"}}}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": "always"}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER], "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
        ({"messages": [{"role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": {}}}]}]},
         "messages[0].tool_calls[0].function.arguments"),
        ({"messages": [{"role": "tool", "content": "18C"}]}, "messages[0].tool_call_id"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
         "messages[0].content[0].image_url.url"),
    ],
)
def test_bad_tool_fields_name_the_field(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(ApiError) as raised:
        parse_chat_request(_request(**fields))
    assert (raised.value.status, raised.value.param) == (400, param)


def test_assistant_tool_calls_and_tool_results_reach_the_backend_history() -> None:
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    ]
    request = parse_chat_request(_request(messages=messages, store=True))
    assistant, tool = request.messages[1:]
    assert assistant.content == "" and assistant.tool_calls == (ToolCall("call_1", "get_weather", '{"city":"Paris"}'),)
    assert tool.role == "tool" and tool.tool_call_id == "call_1"
    assert request.stored_messages[1]["tool_calls"][0]["function"]["name"] == "get_weather"


async def test_tool_calls_answer_in_openai_shape() -> None:
    backend = RecordingBackend([*CALLS, Finish("tool_calls", 10, 20)])
    (body,) = await _answer(_chat(backend), tools=[WEATHER])
    choice = json.loads(body)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
    ]
    assert backend.calls[0][1].tools[0].name == "get_weather"


async def test_tool_calls_stream_as_openai_deltas() -> None:
    backend = RecordingBackend([*CALLS, Finish("tool_calls", 10, 20)])
    pieces = await _answer(_chat(backend), tools=[WEATHER], stream=True)
    assert pieces[-1] == b"data: [DONE]\n\n"
    deltas = [json.loads(p.removeprefix(b"data: "))["choices"][0] for p in pieces[:-1]]
    assert deltas[0]["delta"] == {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}
    assert deltas[1]["delta"] == {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Paris"}'}}]}
    assert deltas[2]["delta"]["tool_calls"][0]["index"] == 1 and "role" not in deltas[2]["delta"]
    assert deltas[-1] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}


async def test_images_reach_a_vision_backend_in_order() -> None:
    backend = RecordingBackend([TextDelta("a cat"), Finish("stop", 1, 1)], vision=True)
    content = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": PIXEL}},
               {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "low"}]
    await _answer(_chat(backend), messages=[{"role": "user", "content": content}])
    (message,) = backend.calls[0][0]
    assert message.content == "what is this?" and message.images == (PIXEL, "https://example.com/cat.png")


async def test_images_for_a_model_without_vision_are_refused() -> None:
    backend = RecordingBackend([Finish("stop", 1, 0)])
    content = [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": PIXEL}}]
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": content}]
    with pytest.raises(ApiError) as raised:
        await _answer(_chat(backend), messages=messages)
    error = raised.value
    assert (error.status, error.code, error.param) == (400, "model_not_multimodal", "messages[1].content[1]")
    assert "'m'" in error.message and not backend.calls


@pytest.mark.parametrize("image_input", ["url", "data_url"])
async def test_placeholders_are_resolved_before_the_backend(image_input: str) -> None:
    resolved: list[tuple[str, Any, bool]] = []

    async def resolver(user_id: str, payload: Any, as_data_url: bool) -> Any:
        resolved.append((user_id, payload, as_data_url))
        replacement = PIXEL if as_data_url else "https://media.example/jan_01abc?sig=1"
        return json.loads(json.dumps(payload).replace("data:image/png;jan_01abc", replacement))

    backend = RecordingBackend([Finish("stop", 1, 0)], vision=True, image_input=image_input)
    content = [{"type": "text", "text": "compare with data:image/png;jan_01abc"},
               {"type": "image_url", "image_url": {"url": "data:image/png;jan_01abc"}}]
    await _answer(_chat(backend, resolver), messages=[{"role": "user", "content": content}])
    (message,) = backend.calls[0][0]
    assert message.content == "compare with https://media.example/jan_01abc?sig=1"  # text gets links
    assert message.images == ((PIXEL,) if image_input == "data_url" else ("https://media.example/jan_01abc?sig=1",))
    assert {user for user, _, _ in resolved} == {"user-1"}


async def test_placeholders_without_media_are_a_clear_400() -> None:
    backend = RecordingBackend([Finish("stop", 1, 0)])
    with pytest.raises(ApiError) as raised:
        await _answer(_chat(backend), messages=[{"role": "user", "content": "see data:image/png;jan_01abc"}])
    assert raised.value.status == 400 and "media is unavailable" in raised.value.message
    assert not backend.calls


async def test_a_conversation_keeps_images_as_sent_and_replays_them_to_vision_models(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions.begin() as session:
        user = User(username="vision-user", is_guest=True)
        session.add(user)
    conversation = await ConversationService(sessions).create(user.id, b"{}")
    seen: list[Any] = []

    async def resolver(user_id: str, payload: Any, as_data_url: bool) -> Any:
        seen.append(payload)
        return json.loads(json.dumps(payload).replace("data:image/png;jan_01abc", PIXEL))

    def chat(backend: RecordingBackend) -> ChatCompletions:
        return ChatCompletions(_only(backend), ConversationMemory(sessions), StoredCompletions(sessions), resolver)

    placeholder = {"type": "image_url", "image_url": {"url": "data:image/png;jan_01abc"}}
    content = [{"type": "text", "text": "look"}, placeholder]
    vision = RecordingBackend([TextDelta("a cat"), Finish("stop", 1, 1)], vision=True)
    await _answer(chat(vision), user.id, messages=[{"role": "user", "content": content}], conversation=conversation.id)
    assert vision.calls[0][0][0].images == (PIXEL,)

    await _answer(chat(vision), user.id, messages=[{"role": "user", "content": "and now?"}],
                  conversation=conversation.id)
    replayed = vision.calls[1][0]
    assert seen[-1] == [["data:image/png;jan_01abc"], [], []]  # stored as sent, resolved again for each prompt
    assert [(m.role, m.images) for m in replayed] == [("user", (PIXEL,)), ("assistant", ()), ("user", ())]

    text_only = RecordingBackend([TextDelta("ok"), Finish("stop", 1, 1)])
    await _answer(chat(text_only), user.id, messages=[{"role": "user", "content": "again"}],
                  conversation=conversation.id)
    assert all(not m.images for m in text_only.calls[0][0]) and text_only.calls[0][0][0].content == "look"
