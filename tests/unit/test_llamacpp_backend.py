"""LlamaCppBackend against the real SmolLM2-135M GGUF. Tests assert behaviour (events, usage, limits,
constraints, capacity), never the model's exact words."""

from __future__ import annotations

import asyncio
import codecs
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import llama_cpp
import pytest

from server.core.config import ModelSettings, bundled_smollm2_path, usable_cpus
from server.core.errors import ApiError
from server.llm.backends.base import ChatMessage, Finish, GenerationEvent, SamplingParams, TextDelta, ToolCall
from server.llm.backends.llamacpp import LlamaCppBackend, _token_bytes
from server.llm.backends.llamacpp_pool import Instance, fit_threads, thread_caps
from server.llm.backends.prompt import ChatTemplate, StopStringFilter
from server.llm.cpu_budget import ThreadBudget

MODEL_PATH = bundled_smollm2_path()

STORY = [ChatMessage("user", "Write a long story about a dragon.")]
PERSON = [ChatMessage("user", "Give a JSON object with the keys name and age for Alice, 30.")]


def make_backend(**settings: int | bool) -> LlamaCppBackend:
    defaults = {"context_size": 512, "threads": 2, "pool_size": 1, "queue_size": 4}
    model = ModelSettings(id="smollm2-test", path=MODEL_PATH, **(defaults | settings))
    return LlamaCppBackend(model, created=1_700_000_000)


@pytest.fixture(scope="module")
async def backend() -> AsyncIterator[LlamaCppBackend]:
    started = make_backend()
    await started.start()
    yield started
    await started.close()


@pytest.fixture(scope="module")
def vocab() -> llama_cpp.Llama:
    """The GGUF's tokenizer and metadata without weights: for checks that need no generation."""
    return llama_cpp.Llama(model_path=MODEL_PATH, vocab_only=True, verbose=False)


@pytest.fixture
async def single_slot() -> AsyncIterator[LlamaCppBackend]:
    """One instance and no waiting room: any request arriving while it is taken gets 429."""
    started = make_backend(queue_size=0)
    await started.start()
    yield started
    await started.close()


async def collect(
    backend: LlamaCppBackend, messages: list[ChatMessage], **params: Any
) -> tuple[str, list[TextDelta], Finish]:
    """Runs one request to the end: its joined text, its deltas and its Finish."""
    events = [event async for event in backend.generate(messages, SamplingParams(**params))]
    deltas = [event for event in events[:-1] if isinstance(event, TextDelta) and event.text]
    assert len(deltas) == len(events) - 1, "only non-empty deltas before the Finish"
    finish = events[-1]
    assert isinstance(finish, Finish)
    return "".join(delta.text for delta in deltas), deltas, finish


def open_stream(backend: LlamaCppBackend, **params: Any) -> AsyncGenerator[GenerationEvent, None]:
    """A story request left open, to hold the instance."""
    return backend.generate(STORY, SamplingParams(**params))


async def first_delta(stream: AsyncIterator[GenerationEvent]) -> TextDelta:
    event = await anext(stream)
    assert isinstance(event, TextDelta)
    return event


async def test_streams_deltas_then_one_finish_with_usage(backend: LlamaCppBackend, vocab: llama_cpp.Llama) -> None:
    assert backend.ready
    assert backend.info.model_id == "smollm2-test" and backend.info.context_size == 512
    text, deltas, finish = await collect(backend, STORY, max_tokens=32, temperature=0)
    assert text.strip()
    content_tokens = len(vocab.tokenize(STORY[0].content.encode(), add_bos=False, special=False))
    assert finish.prompt_tokens > content_tokens  # the template adds its own tokens
    assert 1 <= len(deltas) <= finish.completion_tokens <= 32


async def test_closing_right_after_finish_returns_at_once(backend: LlamaCppBackend) -> None:
    stream = backend.generate(STORY, SamplingParams(max_tokens=2))
    while not isinstance(await anext(stream), Finish):
        pass
    await asyncio.wait_for(stream.aclose(), 1)


async def test_max_tokens_finishes_with_length(backend: LlamaCppBackend) -> None:
    _, _, finish = await collect(backend, STORY, max_tokens=5, temperature=0)
    assert finish.finish_reason == "length"
    assert finish.completion_tokens == 5


async def test_stop_strings_are_never_emitted(backend: LlamaCppBackend) -> None:
    for stop in (" ", "on"):  # a story certainly contains both within 60 tokens
        text, _, finish = await collect(backend, STORY, max_tokens=60, temperature=0, stop=(stop,))
        assert finish.finish_reason == "stop"
        assert stop not in text


def test_stop_filter_holds_back_partial_matches() -> None:
    stops = StopStringFilter(("lo w",))
    # "l" and then "lo" could start the stop string, so they wait for the next chunk.
    assert [stops.push(chunk) for chunk in ("Hel", "lo", " wo")] == ["He", "l", ""]
    assert stops.stopped and stops.flush() == ""

    false_alarm = StopStringFilter(("lox", ""))
    assert [false_alarm.push(chunk) for chunk in ("Hel", "lo", " world")] == ["He", "l", "lo world"]
    assert not false_alarm.stopped

    trailing = StopStringFilter(("END",))
    assert trailing.push("the E") == "the " and trailing.flush() == "E"

    earliest = StopStringFilter(("world", "lo"))
    assert earliest.push("Hello world") == "Hel" and earliest.stopped


async def test_json_schema_output_validates(backend: LlamaCppBackend) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    text, _, finish = await collect(backend, PERSON, max_tokens=100, temperature=0, json_schema=schema)
    assert finish.finish_reason == "stop"
    person = json.loads(text)
    assert isinstance(person["name"], str) and len(person["name"]) <= 20
    assert isinstance(person["age"], int)


async def test_json_object_output_parses(backend: LlamaCppBackend) -> None:
    text, _, finish = await collect(backend, PERSON, max_tokens=100, temperature=0, json_object=True)
    assert finish.finish_reason == "stop"
    assert isinstance(json.loads(text), dict)


async def test_unsupported_schema_is_a_400(backend: LlamaCppBackend) -> None:
    with pytest.raises(ApiError) as raised:
        await collect(backend, PERSON, max_tokens=10, json_schema={"type": "no-such-type"})
    assert raised.value.status == 400 and raised.value.param == "response_format"


async def test_same_seed_gives_same_text(backend: LlamaCppBackend) -> None:
    sampled = [(await collect(backend, STORY, max_tokens=24, temperature=1.0, seed=7))[0] for _ in range(2)]
    assert sampled[0] == sampled[1]


async def test_prompt_longer_than_context_is_a_400(backend: LlamaCppBackend) -> None:
    with pytest.raises(ApiError) as raised:
        await collect(backend, [ChatMessage("user", "word " * 600)], max_tokens=5)
    error = raised.value
    assert (error.status, error.code, error.param) == (400, "context_length_exceeded", "messages")
    assert "512" in error.message


async def test_tool_messages_render_and_generate(backend: LlamaCppBackend, vocab: llama_cpp.Llama) -> None:
    conversation = [
        ChatMessage("system", "You are a weather bot."),
        ChatMessage("user", "What's the weather in Paris?"),
        ChatMessage("assistant", "", tool_calls=(ToolCall("call_1", "get_weather", '{"city": "Paris"}'),)),
        ChatMessage("tool", "18C and sunny", name="get_weather", tool_call_id="call_1"),
    ]
    template = ChatTemplate(vocab.metadata["tokenizer.chat_template"], bos_token="", eos_token="")
    prompt = template.render(conversation)
    # SmolLM2's ChatML template knows no tools: calls and results render in the Hermes markup.
    assert ('<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
            "</tool_call><|im_end|>") in prompt
    assert "<|im_start|>tool\n<tool_response>\n18C and sunny\n</tool_response><|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    _, _, finish = await collect(backend, conversation, max_tokens=8, temperature=0)
    assert finish.prompt_tokens > 20


async def test_deltas_are_whole_utf8_characters(backend: LlamaCppBackend) -> None:
    text, deltas, _ = await collect(
        backend, [ChatMessage("user", "List five emojis.")], max_tokens=40, temperature=0
    )
    assert "\ufffd" not in text
    assert text.encode("utf-8").decode("utf-8") == text
    assert len(deltas) <= 40


def test_token_bytes_reassemble_split_characters(vocab: llama_cpp.Llama) -> None:
    original = "Noël 👩 日本語"
    tokens = vocab.tokenize(original.encode(), add_bos=False)
    pieces = [_token_bytes(llama_cpp.llama_model_get_vocab(vocab.model), token) for token in tokens]
    assert any(_not_utf8(piece) for piece in pieces), "expected a character split across tokens"
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    assert "".join(decoder.decode(piece) for piece in pieces) == original


def _not_utf8(piece: bytes) -> bool:
    try:
        piece.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


async def test_busy_instance_and_full_queue_is_a_429(single_slot: LlamaCppBackend) -> None:
    running = open_stream(single_slot, max_tokens=200, temperature=0)
    await first_delta(running)
    with pytest.raises(ApiError) as raised:
        await first_delta(single_slot.generate(STORY, SamplingParams(max_tokens=5)))
    assert (raised.value.status, raised.value.code) == (429, "server_busy")
    await running.aclose()


async def test_instances_serve_requests_in_parallel() -> None:
    backend = make_backend(pool_size=2, threads=1, queue_size=0)
    await backend.start()
    try:
        streams = [open_stream(backend, max_tokens=100, temperature=0) for _ in range(2)]
        for stream in streams:  # both start before either finishes
            await first_delta(stream)
        with pytest.raises(ApiError) as raised:
            await first_delta(backend.generate(STORY, SamplingParams(max_tokens=5)))
        assert raised.value.status == 429
        for stream in streams:
            await stream.aclose()
    finally:
        await backend.close()


async def test_waiting_request_runs_when_the_instance_frees() -> None:
    backend = make_backend(queue_size=1)
    await backend.start()
    try:
        running = open_stream(backend, max_tokens=200, temperature=0)
        await first_delta(running)
        waiting = asyncio.create_task(collect(backend, STORY, max_tokens=5, temperature=0))
        await asyncio.sleep(0.05)  # let it queue
        with pytest.raises(ApiError) as raised:
            await first_delta(backend.generate(STORY, SamplingParams(max_tokens=5)))
        assert raised.value.status == 429
        assert not waiting.done()
        await running.aclose()
        _, _, finish = await asyncio.wait_for(waiting, 10)
        assert finish.completion_tokens == 5
    finally:
        await backend.close()


async def test_closing_the_stream_frees_the_instance_quickly(single_slot: LlamaCppBackend) -> None:
    stream = open_stream(single_slot, temperature=0)  # would run to the context limit
    for _ in range(3):
        await first_delta(stream)
    started = time.monotonic()
    await stream.aclose()
    # queue_size=0: the next request only succeeds if the instance is already back in the pool.
    await first_delta(single_slot.generate(STORY, SamplingParams(max_tokens=5)))
    assert time.monotonic() - started < 1.0


async def test_cancelled_consumer_frees_the_instance_quickly(single_slot: LlamaCppBackend) -> None:
    async def consume() -> None:
        async for _ in single_slot.generate(STORY, SamplingParams(temperature=0)):
            pass

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.3)  # mid-stream
    started = time.monotonic()
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    _, _, finish = await collect(single_slot, STORY, max_tokens=3)
    assert finish.completion_tokens == 3
    assert time.monotonic() - started < 1.5


async def test_close_stops_in_flight_generation() -> None:
    backend = make_backend()
    await backend.start()
    stream = open_stream(backend, temperature=0)
    await first_delta(stream)
    started = time.monotonic()
    await backend.close()
    assert time.monotonic() - started < 1.0 and not backend.ready
    with pytest.raises(ApiError) as stopped:
        async for _ in stream:
            pass
    assert stopped.value.status == 503
    with pytest.raises(ApiError) as refused:
        await first_delta(backend.generate(STORY, SamplingParams(max_tokens=5)))
    assert refused.value.status == 503


@pytest.mark.parametrize(
    ("budget", "pool_size", "cpus", "caps"),
    [
        (2, 2, 2, [2, 1]),  # the default on 2 cores: one instance may take both, the other only one
        (1, 2, 2, [1, 1]),
        (2, 1, 2, [2]),
        (8, 2, 8, [5, 4]),
        (8, 2, 2, [2, 1]),  # a budget above the CPUs counts as the CPUs
        (4, 4, 16, [2, 2, 2, 1]),
    ],
)
def test_thread_caps_keep_openmp_helpers_below_the_cpus(
    budget: int, pool_size: int, cpus: int, caps: list[int]
) -> None:
    assert thread_caps(budget, pool_size, cpus) == caps
    assert sum(cap - 1 for cap in caps) <= min(budget, cpus) - 1


def test_thread_share_follows_active_generations(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, int, int]] = []
    monkeypatch.setattr(llama_cpp, "llama_set_n_threads", lambda ctx, n, n_batch: calls.append((ctx, n, n_batch)))

    def instance(name: str, cap: int) -> Instance:
        return Instance(0, SimpleNamespace(ctx=name), None, cap, cap)  # type: ignore[arg-type]

    budget = ThreadBudget(4)
    first, capped = instance("first", 4), instance("capped", 1)
    budget.enter()
    fit_threads(budget, first)
    assert calls == [] and first.threads == 4  # alone: the whole budget, already set
    budget.enter()
    fit_threads(budget, first)
    fit_threads(budget, first)
    assert calls == [("first", 2, 2)]  # two generating: half each, set once
    budget.enter()
    fit_threads(budget, first)
    fit_threads(budget, capped)
    assert calls[-1] == ("first", 1, 1) and capped.threads == 1  # 4 // 3 = 1
    for _ in range(2):
        budget.leave()
    fit_threads(budget, first)
    fit_threads(budget, capped)
    assert calls[-1] == ("first", 4, 4) and len(calls) == 3  # back to the whole budget; the cap holds
    budget.leave()
    assert budget.active == 0


async def read_until(stream: AsyncIterator[GenerationEvent], condition: Callable[[], bool]) -> None:
    """Reads deltas until `condition` holds: each one is a decode step of the stream's instance."""
    while not condition():
        await first_delta(stream)


@pytest.mark.skipif(usable_cpus() < 2, reason="needs 2 CPUs for a 2-thread budget")
async def test_instances_split_the_thread_budget_while_generating_together() -> None:
    backend = make_backend(pool_size=2, threads=2)
    await backend.start()
    try:
        primary, secondary = backend._instances
        assert (primary.max_threads, secondary.max_threads) == (2, 1)

        def n_threads(instance: Instance) -> int:
            return int(llama_cpp.llama_n_threads(instance.llm.ctx))

        alone = open_stream(backend, temperature=0)  # runs to the context limit unless closed
        await first_delta(alone)
        assert backend._pool._idle == [secondary]  # a lone request gets the instance allowed the most threads
        assert n_threads(primary) == 2 and backend._budget.active == 1

        second = open_stream(backend, temperature=0)
        await first_delta(second)
        assert backend._budget.active == 2
        await read_until(alone, lambda: primary.threads == 1)  # from its next token on
        assert n_threads(primary) == 1 and n_threads(secondary) == 1

        await second.aclose()
        await read_until(alone, lambda: primary.threads == 2)
        assert n_threads(primary) == 2
        await alone.aclose()
        assert backend._budget.active == 0

        # Released primary first, secondary last: the next lone request still gets the primary.
        both = [open_stream(backend, max_tokens=100, temperature=0) for _ in range(2)]
        for stream in both:
            await first_delta(stream)
        for stream in both:
            await stream.aclose()
        assert backend._pool._idle == [primary, secondary]
        third = open_stream(backend, temperature=0)
        await first_delta(third)
        assert backend._pool._idle == [secondary]
        await third.aclose()
    finally:
        await backend.close()
