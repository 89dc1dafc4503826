"""Embedded CPU inference with llama-cpp-python: a pool of `Llama` instances, each serving one request at a
time.

All llama.cpp work (loading, tokenizing, prefill, decoding) runs in worker threads; ctypes releases the GIL,
so instances generate in parallel while the event loop only moves finished text deltas. A worker thread
streams deltas into the request's asyncio.Queue with one `call_soon_threadsafe` per token.

The instances share one CPU budget, `ModelSettings.threads`: before every prefill chunk and every decode step an
instance takes `threads // (instances generating now)` threads (at least 1, at most its cap, see `thread_caps`).
A lone stream gets the whole budget; concurrent streams split it, so the cores are never oversubscribed.
"""

from __future__ import annotations

import asyncio
import codecs
import ctypes
import dataclasses
import os
import threading
from collections.abc import AsyncGenerator, Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import llama_cpp
import numpy as np
from llama_cpp.llama_grammar import LlamaGrammar

from server.core.config import ModelSettings, usable_cpus
from server.core.errors import invalid_request, shutting_down, unavailable
from server.llm.backends.base import (
    BackendInfo,
    ChatMessage,
    Finish,
    GenerationEvent,
    InferenceBackend,
    SamplingParams,
    TextDelta,
    ToolCall,
)
from server.llm.backends.llamacpp_grammar import GrammarCache
from server.llm.backends.llamacpp_pool import Instance, InstancePool, fit_threads, thread_caps
from server.llm.backends.prompt import (
    ChatTemplate,
    ChatTemplateError,
    StopStringFilter,
    drop_history_to_fit,
    reply_room,
)
from server.llm.backends.tool_prompt import ToolReply
from server.llm.backends.tool_router import RoutingPass, answering, routes, routing_pass
from server.llm.cpu_budget import ThreadBudget

# Prompt tokens evaluated between two cancellation checks: about 0.4 s on one core for SmolLM2-135M, and no
# slower overall than llama.cpp's default 512-token batches.
PREFILL_CHUNK_TOKENS = 64

# Tail trimming before temperature sampling: llama.cpp's defaults, also used by llama-cpp-python and its
# server. OpenAI exposes only temperature and top_p; these keep a small model from sampling junk at 1.0.
TOP_K = 40
MIN_P = 0.05

# Applied while a turn must call tools: without it a 135M model repeats a phrase inside a string argument until
# max_tokens (measured: 1.1 still loops sometimes, 1.3 closes every argument).
CALL_REPEAT_PENALTY = 1.3

# A routing answer is one tool name: a few tokens (the grammar ends it; this bounds a pathological name).
ROUTING_MAX_TOKENS = 32

# llama.cpp reads this seed value as "pick a random seed".
_RANDOM_SEED = llama_cpp.LLAMA_DEFAULT_SEED

# Process-wide, across backends: two `Llama` constructors running at once sometimes end the process silently
# (seen here with llama-cpp-python 0.3.36), so models load and unload one at a time.
_LOAD_LOCK = threading.Lock()


@dataclass
class _Job:
    """One request, as the worker thread sees it."""

    messages: list[ChatMessage]
    params: SamplingParams
    history: range  # stored conversation messages, dropped oldest-first when the prompt does not fit
    emit: Callable[[TextDelta | ToolCall], object]  # thread-safe: schedules the delta onto the request's queue
    cancelled: threading.Event  # set when the consumer is gone; checked between tokens and prefill chunks


class LlamaCppBackend(InferenceBackend):
    """`pool_size` instances of one GGUF model, each generating for one request at a time; the instances
    generating at any moment share `threads` CPU threads."""

    def __init__(self, settings: ModelSettings, *, created: int, budget: ThreadBudget | None = None) -> None:
        self.settings = settings
        self.info = BackendInfo(
            model_id=settings.id,
            owned_by=settings.owned_by,
            created=created,
            context_size=settings.context_size,
            extra={"backend": "llamacpp", "pool_size": settings.pool_size, "threads": settings.threads},
            tools=settings.tools,
        )
        self._pool = InstancePool(settings.id, settings.queue_size)
        # Shared with the process's other computations when given (ModelRegistry does).
        self._budget = budget or ThreadBudget(settings.threads)
        self._instances: list[Instance] = []
        self._template: ChatTemplate | None = None
        self._grammars: GrammarCache | None = None
        self._in_flight: dict[Future[None], threading.Event] = {}
        self._ready = False
        self._closing = False

    @property
    def ready(self) -> bool:
        return self._ready and not self._closing

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        threads = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama-{self.settings.id}-{index}")
            for index in range(self.settings.pool_size)
        ]
        caps = thread_caps(self.settings.threads, self.settings.pool_size, usable_cpus())
        models = await asyncio.gather(
            *(loop.run_in_executor(thread, self._load_model, cap) for thread, cap in zip(threads, caps, strict=True))
        )
        self._instances = [
            Instance(index, llm, thread, cap, cap)
            for index, (llm, thread, cap) in enumerate(zip(models, threads, caps, strict=True))
        ]
        first = models[0]
        self._template = ChatTemplate(
            first.metadata.get("tokenizer.chat_template"),
            bos_token=_token_text(first, first.token_bos()),
            eos_token=_token_text(first, first.token_eos()),
        )
        self._grammars = GrammarCache(llama_cpp.llama_model_get_vocab(first.model))
        for instance in self._instances:
            self._pool.release(instance)
        self._ready = True

    def _load_model(self, threads: int) -> llama_cpp.Llama:
        if not os.path.isfile(self.settings.path):
            raise FileNotFoundError(
                f"GGUF file of model '{self.settings.id}' not found: {self.settings.path!r}"
            )
        with _LOAD_LOCK:
            return llama_cpp.Llama(
                model_path=self.settings.path,
                n_ctx=self.settings.context_size,
                n_threads=threads,
                n_threads_batch=threads,
                verbose=False,
            )

    async def close(self) -> None:
        self._closing = True
        self._pool.close()
        for cancelled in self._in_flight.values():
            cancelled.set()
        if self._in_flight:
            # asyncio.wait, not gather: if close() is cancelled, gather would cancel the workers' futures.
            await asyncio.wait([asyncio.wrap_future(job) for job in self._in_flight])
        for instance in self._instances:
            with _LOAD_LOCK:
                instance.llm.close()
            instance.thread.shutdown(wait=False)
        self._instances.clear()
        self._ready = False

    async def generate(
        self, messages: list[ChatMessage], params: SamplingParams, history: range = range(0)
    ) -> AsyncGenerator[GenerationEvent, None]:
        """Streams deltas, then one Finish. Waiting for an instance happens on the first iteration, which is
        where 429 `server_busy` surfaces."""
        if not self.ready:
            raise unavailable(f"The model '{self.settings.id}' is not loaded")
        instance = await self._pool.acquire()
        if self._closing:
            self._pool.release(instance)
            raise shutting_down()

        loop = asyncio.get_running_loop()
        events: asyncio.Queue[GenerationEvent | BaseException] = asyncio.Queue()
        cancelled = threading.Event()
        job = _Job(
            messages, params, history, lambda delta: loop.call_soon_threadsafe(events.put_nowait, delta), cancelled
        )
        work = instance.thread.submit(self._serve, loop, instance, job, events)
        self._in_flight[work] = cancelled
        work.add_done_callback(lambda done: loop.call_soon_threadsafe(self._in_flight.pop, done, None))
        finished = False
        try:
            while True:
                event = await events.get()
                # Set before yielding: a consumer may close the generator right after it receives Finish.
                finished = isinstance(event, Finish | BaseException)
                if isinstance(event, BaseException):
                    raise event
                yield event
                if finished:
                    return
        finally:
            if not finished:
                # Closed early or cancelled (client disconnect): stop the worker at its next token or prefill
                # chunk, and wait until it lets go of the instance so the capacity is free when we return.
                cancelled.set()
                while not isinstance(await events.get(), Finish | BaseException):
                    pass

    def _serve(
        self,
        loop: asyncio.AbstractEventLoop,
        instance: Instance,
        job: _Job,
        events: asyncio.Queue[GenerationEvent | BaseException],
    ) -> None:
        """Worker thread: runs the job, then returns the instance and delivers the outcome in one loop
        callback, so a client's next request, sent right after Finish, never finds the instance taken."""
        outcome: Finish | BaseException
        self._budget.enter()
        try:
            # None: stopped early. Only close() leaves a consumer to see that; a departed one ignores it.
            outcome = self._generate_blocking(instance, job) or shutting_down()
        except BaseException as error:  # delivered to the consumer, which re-raises it
            outcome = error
        finally:
            self._budget.leave()

        def complete() -> None:
            self._pool.release(instance)
            events.put_nowait(outcome)

        loop.call_soon_threadsafe(complete)

    def _generate_blocking(self, instance: Instance, job: _Job) -> Finish | None:
        """Runs one request on `instance`; returns None if it was cancelled. With `tool_router`, an `auto` tool turn
        first asks the model which tool to use (tool_router.py); its tokens count in the usage."""
        params = job.params
        if not (self.settings.tool_router and routes(params)):
            return self._generate_turn(instance, job, params)
        routing = routing_pass(job.messages, params)
        if routing is None:
            return self._generate_turn(instance, job, answering(params))
        routed = self._route(instance, job, routing)
        if routed is None:
            return None
        params, prompt_tokens, completion_tokens = routed
        finish = self._generate_turn(instance, job, params)
        if finish is None:
            return None
        return dataclasses.replace(
            finish,
            prompt_tokens=finish.prompt_tokens + prompt_tokens,
            completion_tokens=finish.completion_tokens + completion_tokens,
        )

    def _route(self, instance: Instance, job: _Job, routing: RoutingPass) -> tuple[SamplingParams, int, int] | None:
        """Runs the routing pass greedily; returns the turn's parameters and the pass's prompt and completion
        token counts, or None if cancelled."""
        assert self._template is not None and self._grammars is not None
        llm = instance.llm
        prompt = self._template.render(routing.messages)
        tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        if len(tokens) >= llm.n_ctx():  # a user message near the context size: no room to ask, so answer
            return answering(job.params), 0, 0
        grammar = self._grammars.for_gbnf(routing.gbnf())
        if not _prefill(llm, tokens, job.cancelled, lambda: fit_threads(self._budget, instance)):
            return None
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        answer, generated = b"", 0
        for token in llm.generate(tokens, reset=True, temp=0.0, grammar=grammar):
            generated += 1
            if llama_cpp.llama_vocab_is_eog(vocab, token) or generated > ROUTING_MAX_TOKENS:
                break
            if job.cancelled.is_set():
                return None
            answer += _token_bytes(vocab, token)
            fit_threads(self._budget, instance)
        return routing.routed(job.params, answer.decode(errors="replace")), len(tokens), generated

    def _generate_turn(self, instance: Instance, job: _Job, params: SamplingParams) -> Finish | None:
        """Generates the answer or the tool calls of one turn; returns None if cancelled."""
        assert self._template is not None and self._grammars is not None
        llm = instance.llm
        template = self._template

        def tokenize(messages: list[ChatMessage]) -> list[int]:
            try:
                prompt = template.render(messages, params)
            except ChatTemplateError as error:
                raise invalid_request(str(error), param="messages") from error
            # Templates emit bos_token themselves when the model wants it; special=True parses control tokens.
            return llm.tokenize(prompt.encode(), add_bos=False, special=True)

        context_size = llm.n_ctx()
        # Stored history gives way so the answer keeps room: the requested max_tokens, within limits.
        _, prompt_tokens = drop_history_to_fit(
            job.messages, job.history, tokenize, context_size - reply_room(params, context_size)
        )
        if len(prompt_tokens) >= context_size:
            raise invalid_request(
                f"This model's maximum context length is {context_size} tokens, but the messages take "
                f"{len(prompt_tokens)} tokens. Shorten the messages.",
                code="context_length_exceeded",
                param="messages",
            )
        grammar = self._grammars.for_params(params)
        budget = context_size - len(prompt_tokens)
        if params.max_tokens is not None:
            budget = min(budget, params.max_tokens)
        if budget <= 0:
            return Finish("length", len(prompt_tokens), 0)
        if not _prefill(llm, prompt_tokens, job.cancelled, lambda: fit_threads(self._budget, instance)):
            return None

        llm.set_seed(params.seed % _RANDOM_SEED if params.seed is not None else _RANDOM_SEED)

        forced_call = params.tools_enabled and params.tool_choice != "auto"

        def sample(tokens: Sequence[int], grammar: LlamaGrammar | None) -> Generator[int, Any, None]:
            return llm.generate(
                tokens,
                reset=True,
                temp=max(params.temperature, 0.0),
                top_p=params.top_p,
                top_k=TOP_K,
                min_p=MIN_P,
                repeat_penalty=CALL_REPEAT_PENALTY if forced_call else 1.0,
                presence_penalty=params.presence_penalty,
                frequency_penalty=params.frequency_penalty,
                grammar=grammar,
            )

        # The prompt is fully evaluated, so generate() takes its "exact prompt cached" path and samples now.
        sampled = sample(prompt_tokens, grammar)
        # Once a tool turn turns out to be a free-text answer, the rest of the grammar allows anything, yet checking
        # it costs more than half the decode speed: the answer goes on without it.
        drop_grammar = params.tools_enabled and params.tool_choice == "auto" and not (
            params.json_schema or params.json_object
        )
        generated: list[int] = []
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopStringFilter(params.stop)
        # With tools, the first character tells an answer (streamed) from tool calls (the grammar makes calls start
        # with "<"): calls are held back whole and parsed at the end, so their markup never reaches the client.
        reply = ToolReply(job.emit, stops, undecided=params.tools_enabled)
        # completion_tokens counts every sampled token, including the end-of-generation token and a token that
        # completes a stop string (as vLLM and llama.cpp's server do): each one cost a decode step.
        completion_tokens = 0
        finish_reason: Literal["stop", "length"] = "length"
        # A while loop, not a for loop: `sampled` may be swapped for a generator without the grammar (below).
        while (token := next(sampled, None)) is not None:
            completion_tokens += 1
            generated.append(token)
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                finish_reason = "stop"
                break
            # The incremental decoder holds back the first bytes of a character split across tokens.
            reply.push(utf8.decode(_token_bytes(vocab, token)))
            if stops.stopped or reply.repeating:
                finish_reason = "stop"
                break
            if job.cancelled.is_set():
                return None
            if completion_tokens >= budget:
                break
            if drop_grammar and reply.answering:
                drop_grammar = False
                sampled.close()  # its last token is not decoded yet: the new generator decodes it first
                sampled = sample([*prompt_tokens, *generated], None)
            # The generator decodes this token when asked for the next one: size that step.
            fit_threads(self._budget, instance)
        # Flushes the answer's tail (a character left incomplete by the length cutoff is dropped rather than sent as
        # U+FFFD) or emits the calls. Complete calls count even when the token limit cut the turn short: only an
        # unfinished call is lost.
        if reply.finish():
            return Finish("tool_calls", len(prompt_tokens), completion_tokens)
        return Finish(finish_reason, len(prompt_tokens), completion_tokens)


def _prefill(
    llm: llama_cpp.Llama,
    prompt_tokens: Sequence[int],
    cancelled: threading.Event,
    before_step: Callable[[], object],
) -> bool:
    """Evaluates the prompt in short chunks so a cancelled request lets go of the instance quickly.

    Reuses the KV cache for the longest token prefix shared with this instance's previous request (as
    `Llama.generate` does, but interruptibly). Returns False if cancelled first.
    """
    cached = _common_prefix_length(llm.input_ids[: llm.n_tokens], prompt_tokens)
    # The last prompt token is always evaluated again: sampling needs logits that a live decode produced.
    reuse = min(cached, len(prompt_tokens) - 1)
    memory = llama_cpp.llama_get_memory(llm.ctx)
    if reuse > 0 and llama_cpp.llama_memory_seq_rm(memory, 0, reuse, -1):
        llm.n_tokens = reuse
    else:  # nothing shared, or a model whose memory cannot be truncated (recurrent): start over
        llm.reset()
        reuse = 0
    for start in range(reuse, len(prompt_tokens), PREFILL_CHUNK_TOKENS):
        if cancelled.is_set():
            return False
        before_step()
        llm.eval(prompt_tokens[start : start + PREFILL_CHUNK_TOKENS])
    return True


def _common_prefix_length(cached: np.ndarray, tokens: Sequence[int]) -> int:
    length = min(len(cached), len(tokens))
    mismatches = np.flatnonzero(cached[:length] != np.asarray(tokens[:length], dtype=cached.dtype))
    return int(mismatches[0]) if mismatches.size else length


def _token_bytes(vocab: llama_cpp.llama_vocab_p, token: int) -> bytes:
    """The raw bytes of one token (possibly part of a UTF-8 character). Control tokens render as nothing."""
    buffer = ctypes.create_string_buffer(64)
    length = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, False)
    if length < 0:  # longer than the buffer: -length is the size needed
        buffer = ctypes.create_string_buffer(-length)
        length = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, False)
    return buffer.raw[:length]


def _token_text(llm: llama_cpp.Llama, token: int) -> str:
    if token < 0:
        return ""
    return llama_cpp.llama_vocab_get_text(llama_cpp.llama_model_get_vocab(llm.model), token).decode(
        errors="replace"
    )
