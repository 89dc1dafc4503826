"""Chat completions forwarded to an OpenAI-compatible server (vLLM, llama.cpp's server, hosted APIs).

One httpx.AsyncClient per upstream server (OpenAIUpstream, shared by the models it serves) keeps connections open
between requests (HTTP/2 where the server offers it over TLS; plain http:// stays HTTP/1.1). Every request streams
upstream, whatever the client asked for, so text reaches our client chunk by chunk and a client that leaves closes
the upstream response at once, which stops the upstream's generation. Our ids, envelope and error shape are
chat.py's, as for every backend.

Failures before the first byte (connection refused or reset, 502/503/504) are retried a couple of times with a
short backoff; once the upstream has started answering, nothing is retried (it could repeat tokens the client has
seen). Errors map to what a client of ours should see: the upstream's 400 stays a 400 with its message, its 404 is
our 404 `model_not_found`, its 429 our 429, its 5xx our 502 `upstream_error`, an unreachable upstream our 503
`model_unavailable`, a timeout our 504 `upstream_timeout`.

Readiness: start() probes `GET {base_url}/models` once with a short timeout and never fails, and a background task
probes again periodically; `reachable` is the last probe's (or request's) verdict. `ready` stays true while the
backend runs, so a down upstream does not make the whole server unready (restarting us would not fix it): its
requests are tried anyway (the upstream may be back) and answer 503 `model_unavailable` when it is not.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from server.core.config import ModelSettings
from server.core.errors import ApiError, invalid_request, server_busy, shutting_down
from server.core.observability.metrics import MODEL_IN_FLIGHT, MODEL_REJECTIONS
from server.llm.backends.asyncio_network import upstream_transport
from server.llm.backends.base import BackendInfo, ChatMessage, GenerationEvent, InferenceBackend, SamplingParams
from server.llm.backends.openai_wire import ChunkParser, error_message, request_body, upstream_failure
from server.llm.backends.prompt import drop_history_to_fit, estimated_tokens, reply_room

log = logging.getLogger(__name__)

# Waits before the 2nd and 3rd attempt of a request that failed before its first byte.
RETRY_BACKOFF_SECONDS = (0.1, 0.4)
RETRIED_STATUSES = frozenset({502, 503, 504})
PROBE_INTERVAL_SECONDS = 15.0
PROBE_TIMEOUT_SECONDS = 2.0
# Enough of an error body to find its message; a misbehaving upstream cannot make us buffer more.
MAX_ERROR_BODY_BYTES = 64 * 1024


def model_unavailable(model_id: str, why: str) -> ApiError:
    return ApiError(503, f"The model '{model_id}' is unavailable: {why}", code="model_unavailable")


def upstream_timeout(model_id: str) -> ApiError:
    return ApiError(504, f"The upstream of model '{model_id}' did not answer in time", code="upstream_timeout")


@dataclass(frozen=True)
class UpstreamConfig:
    """Where an OpenAI-compatible server is and how to talk to it. `name` is for logs (a model's or a provider's)."""

    name: str
    base_url: str
    api_key: str = ""
    connect_timeout_seconds: float = 5.0
    timeout_seconds: float = 60.0
    max_in_flight: int = 64

    @classmethod
    def of_model(cls, settings: ModelSettings) -> UpstreamConfig:
        return cls(
            name=f"model {settings.id}",
            base_url=settings.base_url,
            api_key=settings.api_key.get_secret_value(),
            connect_timeout_seconds=settings.connect_timeout_seconds,
            timeout_seconds=settings.timeout_seconds,
            max_in_flight=settings.max_in_flight,
        )


class OpenAIUpstream:
    """One OpenAI-compatible server: its connection pool, reachability probe and in-flight cap, shared by every
    model served from it (a JAN_MODELS entry has its own; a catalog provider's models share the provider's)."""

    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self._client: httpx.AsyncClient | None = None
        self._probing: asyncio.Task[None] | None = None
        self._in_flight = 0
        self.started = False
        self.closing = False
        self.reachable = False

    async def start(self) -> None:
        key = self.config.api_key
        self._client = httpx.AsyncClient(
            base_url=self.config.base_url.rstrip("/") + "/",
            http2=True,
            headers={"Authorization": f"Bearer {key}"} if key else {},
            timeout=httpx.Timeout(self.config.timeout_seconds, connect=self.config.connect_timeout_seconds),
            transport=upstream_transport(self.config.max_in_flight),
        )
        await self._probe()
        self._probing = asyncio.create_task(self._probe_periodically())
        self.started = True

    async def _probe(self) -> None:
        assert self._client is not None
        try:
            response = await self._client.get("models", timeout=PROBE_TIMEOUT_SECONDS)
            reachable = response.status_code < 500
        except httpx.HTTPError:
            reachable = False
        if reachable != self.reachable or not self.started:
            log.log(logging.INFO if reachable else logging.WARNING, "upstream of %s at %s is %s",
                    self.config.name, self.config.base_url, "reachable" if reachable else "unreachable")
        self.reachable = reachable

    async def _probe_periodically(self) -> None:
        while True:
            await asyncio.sleep(PROBE_INTERVAL_SECONDS)
            await self._probe()

    async def close(self) -> None:
        self.closing = True
        if self._probing is not None:
            self._probing.cancel()
        if self._client is not None:
            # Streams still reading end with an error, which generate() reports as server_shutting_down.
            await self._client.aclose()

    @asynccontextmanager
    async def stream(self, model_id: str, body: dict[str, object]) -> AsyncIterator[AsyncIterator[str]]:
        """The upstream's SSE lines for one request; leaving the block (finished, failed, or the consumer gone)
        closes the response, which drops the connection if the answer was not read to its end, so the upstream
        stops generating."""
        if self.closing:
            raise shutting_down()
        if self._client is None:
            raise model_unavailable(model_id, "it has not started")
        if self._in_flight >= self.config.max_in_flight:
            MODEL_REJECTIONS.labels(model_id).inc()
            raise server_busy(f"The model '{model_id}' has {self._in_flight} requests in flight; retry shortly")
        self._in_flight += 1
        in_flight = MODEL_IN_FLIGHT.labels(model_id)
        in_flight.inc()
        try:
            response = await self._open(model_id, body)
            try:
                yield response.aiter_lines()
            except httpx.TimeoutException as error:
                raise self._closing_or(upstream_timeout(model_id)) from error
            except httpx.HTTPError as error:
                raise self._closing_or(
                    upstream_failure(f"The upstream of model '{model_id}' failed mid-answer: "
                                     f"{error.__class__.__name__}")
                ) from error
            finally:
                await response.aclose()
        finally:
            self._in_flight -= 1
            in_flight.dec()

    def _closing_or(self, error: ApiError) -> ApiError:
        return shutting_down() if self.closing else error

    async def _open(self, model_id: str, body: dict[str, object]) -> httpx.Response:
        """Sends the request; retries connection failures and 502/503/504 before the first byte."""
        assert self._client is not None
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        request = self._client.build_request(
            "POST", "chat/completions", content=content, headers={"Content-Type": "application/json"}
        )
        for attempt in range(len(RETRY_BACKOFF_SECONDS) + 1):
            last = attempt == len(RETRY_BACKOFF_SECONDS)
            try:
                response = await self._client.send(request, stream=True)
            except (httpx.NetworkError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as error:
                # Refused or reset before any byte of the answer, e.g. on a pooled keep-alive connection the upstream
                # had just closed: nothing reached the client, so trying again is safe.
                if self.closing:
                    raise shutting_down() from error
                self.reachable = False
                if last:
                    raise model_unavailable(model_id, "its upstream cannot be reached") from error
            except httpx.TimeoutException as error:
                raise self._closing_or(upstream_timeout(model_id)) from error
            except httpx.HTTPError as error:
                raise self._closing_or(model_unavailable(model_id, error.__class__.__name__)) from error
            else:
                self.reachable = True
                if response.status_code < 400:
                    return response
                if response.status_code not in RETRIED_STATUSES or last:
                    raise await self._upstream_error(model_id, response)
                await response.aclose()
            await asyncio.sleep(RETRY_BACKOFF_SECONDS[attempt])
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _upstream_error(self, model_id: str, response: httpx.Response) -> ApiError:
        """Our error for the upstream's error response (which this closes)."""
        try:
            raw = b""
            async for piece in response.aiter_bytes():
                raw += piece
                if len(raw) > MAX_ERROR_BODY_BYTES:
                    break
        except httpx.HTTPError:
            pass
        finally:
            await response.aclose()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = raw.decode(errors="replace")[:500]
        message = error_message(payload) if not isinstance(payload, str) else payload
        error = payload.get("error") if isinstance(payload, dict) else None
        upstream_code = error.get("code") if isinstance(error, dict) else None
        upstream_code = upstream_code if isinstance(upstream_code, str) else None
        status = response.status_code
        log.warning("upstream of model %s answered %d: %s", model_id, status, message[:300])
        if status == 404:
            return ApiError(404, f"The model '{model_id}' is not available at its upstream: {message}",
                            code="model_not_found", param="model")
        if status == 429:
            return ApiError(429, f"The upstream of model '{model_id}' is rate limiting: {message}",
                            code=upstream_code or "rate_limit_exceeded")
        if status in (401, 403):
            # Our credentials, not the client's: the operator must fix the model's api_key.
            return upstream_failure(f"The upstream of model '{model_id}' refused our credentials ({status})")
        if 400 <= status < 500:
            return invalid_request(message or f"The upstream refused the request ({status})",
                                   code=upstream_code or "invalid_parameter")
        return upstream_failure(f"The upstream of model '{model_id}' failed ({status}): {message}")


class OpenAIUpstreamBackend(InferenceBackend):
    """A model served by an OpenAI-compatible server. With no `upstream` it has its own connection (a JAN_MODELS
    entry) and starts and closes it; a catalog provider's models share the provider's, which the catalog owns."""

    def __init__(self, settings: ModelSettings, upstream: OpenAIUpstream | None = None) -> None:
        self.settings = settings
        self.info = BackendInfo(
            model_id=settings.id,
            owned_by=settings.owned_by,
            created=0,
            context_size=settings.context_size,
            extra={"backend": "openai", "base_url": settings.base_url},
            vision=settings.vision,
            image_input=settings.image_input,
            tools=settings.tools,
        )
        self._upstream_model = settings.upstream_model or settings.id
        self._owns_upstream = upstream is None
        self.upstream = upstream or OpenAIUpstream(UpstreamConfig.of_model(settings))

    @property
    def ready(self) -> bool:
        return self.upstream.started and not self.upstream.closing

    @property
    def reachable(self) -> bool:
        return self.upstream.reachable

    async def start(self) -> None:
        if self._owns_upstream:
            await self.upstream.start()

    async def close(self) -> None:
        if self._owns_upstream:
            await self.upstream.close()

    async def generate(
        self, messages: list[ChatMessage], params: SamplingParams, history: range = range(0)
    ) -> AsyncGenerator[GenerationEvent, None]:
        """Stored `history` gives way oldest-first when the prompt's estimated size leaves the answer too little of
        `context_size` (the upstream's tokenizer is not ours, so the estimate errs long); a prompt the client sent
        that is too long for the upstream still gets the upstream's 400."""
        if history:
            limit = self.info.context_size - reply_room(params, self.info.context_size)
            messages, _ = drop_history_to_fit(messages, history, estimated_tokens, limit)
        body = request_body(self._upstream_model, messages, params, self.settings.json_schema_format)
        async with self.upstream.stream(self.settings.id, body) as lines:
            parser = ChunkParser()
            async for line in lines:
                delta = parser.line(line)
                if delta is not None:
                    yield delta
            for event in parser.finish():
                yield event
