"""Tool calling on the llama.cpp backend with the real SmolLM2-135M GGUF: the tool grammar, the prompt, and the
events. Tests assert shapes (schema-valid calls, no markup leaks), never the model's choices of values."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import llama_cpp
import pytest

from server.core.errors import ApiError
from server.llm.backends.base import (
    ChatMessage,
    Finish,
    GenerationEvent,
    NamedTool,
    SamplingParams,
    TextDelta,
    ToolCall,
    ToolSpec,
)
from server.llm.backends.llamacpp import LlamaCppBackend
from server.llm.backends.llamacpp_grammar import MAX_PARALLEL_CALLS, GrammarCache, bounded_schema
from server.llm.backends.prompt import ChatTemplate
from server.llm.backends.tool_prompt import parse_tool_calls
from tests.unit.test_llamacpp_backend import MODEL_PATH, make_backend

WEATHER = ToolSpec(
    "get_weather",
    "Get the current weather in a city",
    {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30},
                       "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
    },
)
CLOCK = ToolSpec("get_time", None, {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 20}},
                                    "required": ["zone"]})
PYTHON = ToolSpec(
    "python_exec",
    "Execute Python code in a sandbox and return stdout. Use it for calculations.",
    {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]},
)
HUGE = ToolSpec("file_search_index", None, {"type": "object", "properties": {
    "text": {"type": "string", "minLength": 1, "maxLength": 100_000},
    "ids": {"type": "array", "maxItems": 1000, "items": {"type": "string", "pattern": "^[a-z]{1,20}$"}},
    "code": {"type": "string", "pattern": "^[0-9]{2,300}$"},
}})
QUESTION = [ChatMessage("user", "What's the weather like in Paris?")]
CALCULATION = [ChatMessage("user", "What is 1234 * 5678?")]
STORY = [ChatMessage("user", "Write a long story about a dragon.")]


@pytest.fixture(scope="module")
async def backend() -> AsyncIterator[LlamaCppBackend]:
    started = make_backend(context_size=1024)
    await started.start()
    yield started
    await started.close()


@pytest.fixture(scope="module")
async def single_pass_backend() -> AsyncIterator[LlamaCppBackend]:
    """`tool_router` off: `auto` is one pass under the answer-or-call grammar, as for models that decide well."""
    started = make_backend(context_size=1024, tool_router=False)
    await started.start()
    yield started
    await started.close()


@pytest.fixture(scope="module")
def vocab() -> llama_cpp.Llama:
    return llama_cpp.Llama(model_path=MODEL_PATH, vocab_only=True, verbose=False)


async def run(backend: LlamaCppBackend, messages: list[ChatMessage], **params: Any) -> list[GenerationEvent]:
    events = [event async for event in backend.generate(messages, SamplingParams(temperature=0, **params))]
    assert isinstance(events[-1], Finish) and not any(isinstance(e, Finish) for e in events[:-1])
    return events


def calls_of(events: list[GenerationEvent]) -> list[ToolCall]:
    return [event for event in events if isinstance(event, ToolCall)]


async def test_required_choice_gives_schema_valid_calls_and_no_text(backend: LlamaCppBackend) -> None:
    events = await run(backend, QUESTION, max_tokens=120, tools=(WEATHER, CLOCK), tool_choice="required")
    calls = calls_of(events)
    assert calls and not any(isinstance(e, TextDelta) for e in events)
    assert events[-1].finish_reason == "tool_calls"  # type: ignore[union-attr]
    for call in calls:
        assert call.id.startswith("call_") and call.name in ("get_weather", "get_time")
        arguments = json.loads(call.arguments_json)
        if call.name == "get_weather":
            assert set(arguments) == {"city", "unit"} and arguments["unit"] in ("celsius", "fahrenheit")
    assert len({(c.name, c.arguments_json) for c in calls}) == len(calls) <= MAX_PARALLEL_CALLS  # no repeats


async def test_named_choice_calls_only_that_tool_once(backend: LlamaCppBackend) -> None:
    events = await run(backend, QUESTION, max_tokens=120, tools=(WEATHER, CLOCK),
                       tool_choice=NamedTool("get_time"), parallel_tool_calls=False)
    (call,) = calls_of(events)
    assert call.name == "get_time" and set(json.loads(call.arguments_json)) == {"zone"}


async def test_auto_choice_streams_a_plain_answer_without_markup(single_pass_backend: LlamaCppBackend) -> None:
    events = await run(single_pass_backend, STORY, max_tokens=40, tools=(WEATHER,), stop=("\n\n",))
    deltas = [event for event in events if isinstance(event, TextDelta)]
    text = "".join(delta.text for delta in deltas)
    assert len(deltas) > 5 and not calls_of(events)  # streamed token by token, after the grammar's first choice
    assert "<tool_call>" not in text and text.strip()
    assert events[-1].finish_reason in ("stop", "length")  # type: ignore[union-attr]


async def test_auto_routes_a_calculation_to_the_python_tool(backend: LlamaCppBackend) -> None:
    events = await run(backend, CALCULATION, max_tokens=120, tools=(WEATHER, PYTHON))
    (call,) = calls_of(events)
    assert call.name == "python_exec" and set(json.loads(call.arguments_json)) == {"code"}
    finish = events[-1]
    assert isinstance(finish, Finish) and finish.finish_reason == "tool_calls"
    assert finish.prompt_tokens > 150  # the routing prompt's tokens count too


async def test_auto_answers_small_talk_in_text(backend: LlamaCppBackend) -> None:
    events = await run(backend, [ChatMessage("user", "Say hello.")], max_tokens=20, tools=(WEATHER, PYTHON))
    assert not calls_of(events) and "".join(e.text for e in events if isinstance(e, TextDelta)).strip()


async def test_auto_answers_once_tool_results_are_in(backend: LlamaCppBackend) -> None:
    call = ToolCall("call_1", "python_exec", '{"code": "print(1234 * 5678)"}')
    history = [*CALCULATION, ChatMessage("assistant", "", tool_calls=(call,)),
               ChatMessage("tool", "7006652", tool_call_id="call_1")]
    events = await run(backend, history, max_tokens=30, tools=(WEATHER, PYTHON))
    assert not calls_of(events) and any(isinstance(e, TextDelta) for e in events)


async def test_tool_result_in_history_reaches_a_second_turn(backend: LlamaCppBackend) -> None:
    call = ToolCall("call_1", "get_weather", '{"city": "Paris", "unit": "celsius"}')
    history = [*QUESTION, ChatMessage("assistant", "", tool_calls=(call,)),
               ChatMessage("tool", '{"temperature": 18}', tool_call_id="call_1")]
    events = await run(backend, history, max_tokens=30, tools=(WEATHER,), tool_choice="none")
    assert any(isinstance(e, TextDelta) for e in events) and not calls_of(events)
    assert events[-1].prompt_tokens > 40  # type: ignore[union-attr]


async def test_a_schema_the_grammar_cannot_express_is_a_400_naming_the_tool(backend: LlamaCppBackend) -> None:
    bad = ToolSpec("bad", None, {"type": "object", "properties": {"x": {"type": "no-such-type"}}})
    with pytest.raises(ApiError) as raised:
        await run(backend, QUESTION, max_tokens=5, tools=(WEATHER, bad))
    assert (raised.value.status, raised.value.param) == (400, "tools[1].function.parameters")
    assert (await run(backend, QUESTION, max_tokens=3))[-1]  # the instance is still serving


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(tools=(WEATHER, CLOCK)),
        SamplingParams(tools=(WEATHER, CLOCK), tool_choice="required", parallel_tool_calls=False),
        SamplingParams(tools=(WEATHER, CLOCK), tool_choice=NamedTool("get_time")),
        SamplingParams(tools=(WEATHER,), json_schema={"type": "object", "properties": {"a": {"type": "integer"}}}),
        SamplingParams(tools=(WEATHER,), json_object=True),
        SamplingParams(tools=(HUGE,)),
        SamplingParams(tools=(WEATHER,), json_schema=HUGE.parameters),
    ],
)
def test_tool_grammars_compile_and_are_cached(vocab: llama_cpp.Llama, params: SamplingParams) -> None:
    cache = GrammarCache(llama_cpp.llama_model_get_vocab(vocab.model))
    grammar = cache.for_params(params)
    assert grammar is not None and cache.for_params(params) is grammar
    assert cache.for_params(SamplingParams(tools=(WEATHER,), tool_choice="none")) is None


def test_huge_counts_are_left_out_of_grammars(vocab: llama_cpp.Llama) -> None:
    """llama.cpp spells `{0,n}` out as n rules: file_search_index's maxLength 100000 once killed the process."""
    cache = GrammarCache(llama_cpp.llama_model_get_vocab(vocab.model))
    assert cache.for_params(SamplingParams(json_schema=HUGE.parameters)) is not None
    assert bounded_schema(HUGE.parameters)["properties"] == {
        "text": {"type": "string", "minLength": 1},
        "ids": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]{1,20}$"}},
        "code": {"type": "string"},
    }


def test_only_complete_calls_are_parsed() -> None:
    text = ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n'
            '<tool_call>\n{"name": "get_weather", "arguments": {"ci')
    (call,) = parse_tool_calls(text)
    assert (call.name, json.loads(call.arguments_json)) == ("get_weather", {"city": "Oslo"})


def test_templates_that_know_tools_render_them_natively() -> None:
    template = ChatTemplate(
        "{% for t in tools or [] %}[{{ t.function.name }}]{% endfor %}"
        "{% for m in messages %}{{ m.role }}:{{ m.content }}"
        "{% for c in m.tool_calls or [] %}<{{ c.function.name }} {{ c.function.arguments.city }}>{% endfor %}|"
        "{% endfor %}",
        bos_token="", eos_token="",
    )
    history = [ChatMessage("user", "hi"),
               ChatMessage("assistant", "", tool_calls=(ToolCall("c1", "get_weather", '{"city": "Oslo"}'),))]
    assert template.knows_tools
    rendered = template.render(history, SamplingParams(tools=(WEATHER,)))
    assert rendered == "[get_weather]user:hi|assistant:<get_weather Oslo>|"
