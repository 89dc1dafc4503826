"""Chat completions from a model on NVIDIA Triton's vLLM backend, streamed over gRPC (`ModelStreamInfer`) with
tritonclient's asyncio client.

We render the prompt with the model's own chat template (chat_template.py) and send the text; Triton streams the
answer back piece by piece with its finish reason and token counts (triton_wire.py), which become our usage. Every
request streams, whatever the client asked for, so a client that leaves cancels the gRPC stream at once, and the
vLLM backend aborts the generation. One gRPC channel per model carries all its requests (HTTP/2 streams).

Readiness follows Triton's: `ServerLive` and `ModelReady` are checked at start (never failing it: a GPU server that
comes up after us is picked up), every `probe_interval_seconds`, and again when a request finds the model not ready.
While Triton or the model is not ready the backend is not `ready` (our /readyz names it) and its requests answer 503
`model_unavailable`. Errors: Triton's error before the first piece of text is our 503 (model not ready or unknown),
400 (prompt too long) or 502 `upstream_error`; after it, a 502 that chat.py sends as an SSE error event. A stream
that stays silent for `timeout_seconds` is our 504 `upstream_timeout`.

Tools (`tools: true` in the model's settings, for templates that render them, as Qwen2.5's does): the template
describes them, and a turn the model opens with `<tool_call>` is parsed into tool calls (tool_prompt.ToolReply).
Only `tool_choice` auto and none: forcing a call would need constrained decoding.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Literal

import grpc
import tritonclient.grpc.aio as triton
from tritonclient.utils import InferenceServerException

from server.core.config import ModelSettings
from server.core.errors import ApiError, invalid_request, server_busy, shutting_down
from server.core.observability.metrics import MODEL_IN_FLIGHT, MODEL_REJECTIONS
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
from server.llm.backends.chat_template import LoadedTemplate, load_chat_template
from server.llm.backends.openai_upstream import model_unavailable, upstream_timeout
from server.llm.backends.openai_wire import upstream_failure
from server.llm.backends.prompt import (
    CHARS_PER_TOKEN_ESTIMATE,
    ChatTemplateError,
    StopStringFilter,
    drop_history_to_fit,
    reply_room,
)
from server.llm.backends.tool_prompt import ToolReply
from server.llm.backends.triton_wire import FINISH_REASONS, decode_response, infer_request, sampling_parameters

log = logging.getLogger(__name__)

# tritonclient's own channel options, plus a short reconnect backoff: gRPC's grows to 2 minutes, during which a
# Triton that came back would still look down to us.
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 2**31 - 1),
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.keepalive_time_ms", 2**31 - 1),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", False),
    ("grpc.http2.max_pings_without_data", 2),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]

# Triton's words for a model it cannot run now (not loaded, loading, unloaded, unhealthy engine).
_NOT_READY = re.compile(r"unknown model|not (at )?ready|no available version|unavailable|not found", re.IGNORECASE)
# vLLM refusing a prompt longer than max_model_len.
_TOO_LONG = re.compile(r"maximum (model|context) length|longer than the maximum", re.IGNORECASE)


class TritonBackend(InferenceBackend):
    """A model served by Triton's vLLM backend; at most `max_in_flight` requests at once, more get 429."""

    def __init__(self, settings: ModelSettings) -> None:
        self.settings = settings
        self.info = BackendInfo(
            model_id=settings.id,
            owned_by=settings.owned_by,
            created=0,
            context_size=settings.context_size,
            extra={"backend": "triton", "triton_url": settings.triton_url},
            vision=False,
            tools=settings.tools,
        )
        self._model = settings.upstream_model or settings.id
        self._client: triton.InferenceServerClient | None = None
        self._template: LoadedTemplate | None = None
        self._probing: asyncio.Task[None] | None = None
        self._in_flight = 0
        self._started = False
        self._closing = False
        self.model_ready = False  # Triton's last word: server live and model ready

    @property
    def ready(self) -> bool:
        return self._started and not self._closing and self.model_ready

    async def start(self) -> None:
        """Fails only on our own configuration (an unreadable chat template), never because Triton is down."""
        settings = self.settings
        self._template = load_chat_template(
            settings.triton_template_path, inline=settings.chat_template, eos_token=settings.eos_token
        )
        self._client = triton.InferenceServerClient(url=settings.triton_url, channel_args=_CHANNEL_OPTIONS)
        await self._probe()
        self._probing = asyncio.create_task(self._probe_periodically())
        self._started = True

    async def _probe(self) -> bool:
        assert self._client is not None
        timeout = self.settings.connect_timeout_seconds
        try:
            ready = await self._client.is_server_live(client_timeout=timeout) and await self._client.is_model_ready(
                self._model, client_timeout=timeout
            )
        except InferenceServerException:
            ready = False
        self._set_ready(bool(ready))
        return self.model_ready

    def _set_ready(self, ready: bool) -> None:
        if ready != self.model_ready or not self._started:
            log.log(logging.INFO if ready else logging.WARNING, "model %s (%s at Triton %s) is %s", self.settings.id,
                    self._model, self.settings.triton_url, "ready" if ready else "not ready")
        self.model_ready = ready

    async def _probe_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.probe_interval_seconds)
            try:
                await self._probe()
            except Exception:  # a surprise must not end the probing: the model would stay as it was forever
                log.exception("checking Triton's readiness of model %s failed", self.settings.id)

    async def close(self) -> None:
        self._closing = True
        if self._probing is not None:
            self._probing.cancel()
        if self._client is not None:
            # Streams still open end with CANCELLED, which generate() reports as server_shutting_down.
            await self._client.close()

    async def generate(
        self, messages: list[ChatMessage], params: SamplingParams, history: range = range(0)
    ) -> AsyncGenerator[GenerationEvent, None]:
        """Stored `history` gives way oldest-first when the rendered prompt's estimated size leaves the answer too
        little of `context_size` (the tokenizer is Triton's, so the estimate errs long); a prompt the client sent that
        is too long gets the model's 400."""
        if self._closing:
            raise shutting_down()
        if self._client is None or self._template is None:
            raise model_unavailable(self.settings.id, "it has not started")
        self._refuse_unsupported(params)
        if self._in_flight >= self.settings.max_in_flight:
            MODEL_REJECTIONS.labels(self.settings.id).inc()
            raise server_busy(f"The model '{self.settings.id}' has {self._in_flight} requests in flight; retry shortly")
        if not self.model_ready and not await self._probe():
            raise model_unavailable(self.settings.id, "Triton reports it is not ready")
        template = self._template.template

        def estimate(candidate: list[ChatMessage]) -> range:
            return range(len(template.render(candidate, params)) // CHARS_PER_TOKEN_ESTIMATE)

        try:
            if history:
                limit = self.info.context_size - reply_room(params, self.info.context_size)
                messages, _ = drop_history_to_fit(messages, history, estimate, limit)
            prompt = template.render(messages, params)
        except ChatTemplateError as error:
            raise invalid_request(str(error), param="messages") from error
        sampling = sampling_parameters(params, self.info.context_size, self._template.eos_token)
        request = infer_request(self._model, "jan-" + secrets.token_hex(8), prompt, sampling)
        self._in_flight += 1
        in_flight = MODEL_IN_FLIGHT.labels(self.settings.id)
        in_flight.inc()
        try:
            async for event in self._stream(request, params.tools_enabled):
                yield event
        finally:
            self._in_flight -= 1
            in_flight.dec()

    def _refuse_unsupported(self, params: SamplingParams) -> None:
        if params.tools_enabled and not self.info.tools:
            raise invalid_request(f"The model '{self.settings.id}' does not support tools", param="tools",
                                  code="model_does_not_support_tools")
        if params.tools_enabled and params.tool_choice != "auto":
            # Forcing a call needs constrained decoding, which the vLLM backend's sampling parameters do not offer
            # in a stable form: the model decides (auto) or answers without tools (none).
            raise invalid_request(f"The model '{self.settings.id}' supports tool_choice auto and none only",
                                  param="tool_choice")
        if params.json_schema is not None or params.json_object:
            raise invalid_request(f"The model '{self.settings.id}' does not support response_format JSON modes",
                                  param="response_format")

    async def _stream(self, request: dict[str, Any], tools: bool) -> AsyncIterator[GenerationEvent]:
        """The events of one streamed request. Leaving early (the consumer gone, an error) cancels the gRPC call.

        With tools, the text goes through ToolReply: an answer streams as it comes, a turn that opens with
        `<tool_call>` (the Hermes markup the model's template asks for) is held back and parsed into ToolCalls."""
        assert self._client is not None
        pending: list[TextDelta | ToolCall] = []
        reply = ToolReply(pending.append, StopStringFilter(()), undecided=True) if tools else None

        async def one_request() -> AsyncIterator[dict[str, Any]]:
            yield request  # then the request stream half-closes: Triton ends the call after the final response

        call = self._client.stream_infer(inputs_iterator=one_request())
        ended = False
        prompt_tokens = completion_tokens = 0
        finish_reason: str | None = None
        answered = False
        try:
            while True:
                try:
                    async with asyncio.timeout(self.settings.timeout_seconds):
                        result, error = await anext(call)
                except StopAsyncIteration:
                    ended = True
                    break
                except TimeoutError as timeout:
                    raise upstream_timeout(self.settings.id) from timeout
                except grpc.RpcError as rpc_error:
                    ended = True
                    raise self._call_failed(rpc_error) from rpc_error
                except asyncio.CancelledError:
                    # close() closing the channel cancels its calls locally, which grpc.aio raises as CancelledError
                    # in the reader; a cancellation of our own task (the client left) propagates as it is.
                    task = asyncio.current_task()
                    if self._closing and task is not None and not task.cancelling():
                        ended = True
                        raise shutting_down() from None
                    raise
                if error is not None:
                    raise self._triton_error(str(error.message()), answered)
                piece = decode_response(result.get_response())
                if piece.input_tokens is not None:
                    prompt_tokens = piece.input_tokens
                completion_tokens += piece.output_tokens
                if piece.text and finish_reason is None:
                    answered = True
                    if reply is None:
                        yield TextDelta(piece.text)
                    else:
                        reply.push(piece.text)
                        for event in pending:
                            yield event
                        pending.clear()
                if piece.final:
                    finish_reason = piece.finish_reason or "stop"
            # The final response came and Triton closed the call: only now is the answer complete.
            if finish_reason is None:
                raise upstream_failure(f"Triton ended the answer of model '{self.settings.id}' without finishing it")
            if finish_reason not in FINISH_REASONS:
                raise upstream_failure(f"Triton stopped the answer of model '{self.settings.id}': {finish_reason}")
            called = reply is not None and reply.finish()
            for event in pending:
                yield event
            reason: Literal["stop", "length", "tool_calls"] = "tool_calls" if called else FINISH_REASONS[finish_reason]
            yield Finish(reason, prompt_tokens, completion_tokens)
        finally:
            if not ended:
                call.cancel()

    def _triton_error(self, message: str, answered: bool) -> ApiError:
        """An error response in the stream: the model's (or Triton's) verdict on this request."""
        log.warning("Triton failed a request of model %s: %s", self.settings.id, message[:300])
        if self._closing:
            return shutting_down()
        if not answered and _NOT_READY.search(message):
            self._set_ready(False)
            return model_unavailable(self.settings.id, message)
        if not answered and _TOO_LONG.search(message):
            return invalid_request(message, param="messages", code="context_length_exceeded")
        return upstream_failure(f"Triton failed the answer of model '{self.settings.id}': {message}")

    def _call_failed(self, error: grpc.RpcError) -> ApiError:
        """The gRPC call itself failed: Triton unreachable, gone, or shutting down."""
        if self._closing:
            return shutting_down()
        code = error.code() if isinstance(error, grpc.aio.AioRpcError) else None
        details = error.details() if isinstance(error, grpc.aio.AioRpcError) else str(error)
        if code == grpc.StatusCode.UNAVAILABLE:
            self._set_ready(False)
            return model_unavailable(self.settings.id, "Triton cannot be reached")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return upstream_timeout(self.settings.id)
        return upstream_failure(f"Triton failed the answer of model '{self.settings.id}': {code} {details}")
