"""A KServe v2 gRPC test server that stands in for NVIDIA Triton running models on its vLLM backend (Triton needs a
GPU and is not installable here). Built from tritonclient's own generated stubs (`service_pb2_grpc`), so the wire is
the real one; the triton backend's tests and bench talk to it with the unmodified tritonclient.

What it does, as Triton + vLLM would:
- `ServerLive`, `ServerReady`, `ModelReady` (each model's readiness can be toggled), `ModelMetadata`.
- `ModelStreamInfer`: for each request, a scripted reply streamed one word ("token") per response: "You said: "
  followed by the last user turn of the ChatML prompt it received. It honours `max_tokens` (vLLM's default 16;
  finish_reason "length"), `stop` strings (never shown, as vLLM; finish_reason "stop") and the `return_*` flags; the
  last response carries finish_reason and Triton's `triton_final_response` parameter.
- Magic words in the prompt: `[call NAME]` (with tools in the prompt) replies with a Hermes tool call of NAME;
  `[long]` replies with endless words until max_tokens; `[fail after N]` sends Triton's error response after N
  words; `[slow]` waits `slow_delay` between words.
- It records every request (the prompt, the parsed sampling parameters, the flags) and every request a client
  cancelled mid-stream.

    python -m tests.support.triton_test_server --port 8001 [--model qwen2.5-0.5b-instruct]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import struct
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.support.ports import free_port

DEFAULT_MODEL = "qwen2.5-0.5b-instruct"
VLLM_DEFAULT_MAX_TOKENS = 16
_UINT32 = struct.Struct("<I")
_LAST_USER_TURN = re.compile(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", re.DOTALL)
_FAIL_AFTER = re.compile(r"\[fail after (\d+)\]")
_CALL = re.compile(r"\[call (\w+)\]")


@dataclass
class ReceivedRequest:
    model: str
    request_id: str
    text_input: str
    sampling: dict[str, Any]
    flags: dict[str, bool]


def _bytes_element(value: bytes) -> bytes:
    return _UINT32.pack(len(value)) + value


def _decode_inputs(request: service_pb2.ModelInferRequest) -> dict[str, Any]:
    """Inputs by name: BYTES as bytes, BOOL as bool (one element each, as the vLLM backend takes them)."""
    values: dict[str, Any] = {}
    for tensor, raw in zip(request.inputs, request.raw_input_contents, strict=False):
        if tensor.datatype == "BYTES":
            (length,) = _UINT32.unpack_from(raw)
            values[tensor.name] = raw[4 : 4 + length]
        elif tensor.datatype == "BOOL":
            values[tensor.name] = raw[:1] == b"\x01"
    return values


def reply_words(prompt: str) -> tuple[list[str], bool]:
    """The scripted reply as tokens (each word with its leading space), and whether it goes on forever. With tools
    in the prompt, `[call NAME]` in the last user turn makes the reply a Hermes tool call of NAME."""
    turns = _LAST_USER_TURN.findall(prompt)
    said = turns[-1] if turns else prompt
    if "[long]" in prompt:
        return [], True
    call = _CALL.search(said)
    if call and "<tools>" in prompt:
        body = json.dumps({"name": call.group(1), "arguments": {"city": "Paris"}})
        return re.findall(r"\s*\S+", f"<tool_call>\n{body}\n</tool_call>"), False
    return re.findall(r"\s*\S+", "You said: " + said), False


class _Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, server: TritonTestServer) -> None:
        self._server = server

    async def ServerLive(self, request: Any, context: Any) -> service_pb2.ServerLiveResponse:
        return service_pb2.ServerLiveResponse(live=self._server.live)

    async def ServerReady(self, request: Any, context: Any) -> service_pb2.ServerReadyResponse:
        return service_pb2.ServerReadyResponse(ready=self._server.live and all(self._server.models.values()))

    async def ModelReady(self, request: Any, context: Any) -> service_pb2.ModelReadyResponse:
        return service_pb2.ModelReadyResponse(ready=self._server.models.get(request.name, False))

    async def ModelMetadata(self, request: Any, context: Any) -> service_pb2.ModelMetadataResponse:
        if request.name not in self._server.models:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"Request for unknown model: '{request.name}' is not found")
        return service_pb2.ModelMetadataResponse(name=request.name, versions=["1"], platform="vllm")

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[service_pb2.ModelInferRequest], context: Any
    ) -> AsyncIterator[service_pb2.ModelStreamInferResponse]:
        async for request in request_iterator:
            async for response in self._server.generate(request):
                yield response


@dataclass
class TritonTestServer:
    models: dict[str, bool] = field(default_factory=lambda: {DEFAULT_MODEL: True})  # name -> ready
    live: bool = True
    slow_delay: float = 0.02
    port: int = 0
    requests: list[ReceivedRequest] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)  # request ids a client cancelled mid-stream

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def generate(
        self, request: service_pb2.ModelInferRequest
    ) -> AsyncIterator[service_pb2.ModelStreamInferResponse]:
        name = request.model_name
        if name not in self.models or not self.models[name]:
            state = "is not found" if name not in self.models else "version 1 is not at ready state"
            yield service_pb2.ModelStreamInferResponse(error_message=f"Request for unknown model: '{name}' {state}")
            return
        inputs = _decode_inputs(request)
        prompt = inputs.get("text_input", b"").decode()
        sampling = json.loads(inputs.get("sampling_parameters", b"{}") or b"{}")
        flags = {key: value for key, value in inputs.items() if isinstance(value, bool)}
        self.requests.append(ReceivedRequest(name, request.id, prompt, sampling, flags))
        try:
            async for response in self._answer(request, prompt, sampling, flags):
                yield response
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled.append(request.id)
            raise

    async def _answer(self, request: service_pb2.ModelInferRequest, prompt: str, sampling: dict[str, Any],
                      flags: dict[str, bool]) -> AsyncIterator[service_pb2.ModelStreamInferResponse]:
        words, endless = reply_words(prompt)
        max_tokens = int(sampling.get("max_tokens", VLLM_DEFAULT_MAX_TOKENS))
        stops = sampling.get("stop") or []
        stops = [stops] if isinstance(stops, str) else stops
        # As vLLM does while streaming: text that could begin a stop string is held back until it cannot.
        hold = max((len(stop) - 1 for stop in stops), default=0)
        fail = _FAIL_AFTER.search(prompt)
        text, sent, produced = "", 0, 0
        input_tokens = len(prompt.split())
        while True:
            if fail and produced == int(fail.group(1)):
                yield service_pb2.ModelStreamInferResponse(error_message="Error generating stream: simulated failure")
                return
            if "[slow]" in prompt or endless:
                await asyncio.sleep(self.slow_delay if "[slow]" in prompt else 0)
            word = f" word{produced}" if endless else (words[produced] if produced < len(words) else None)
            finish = None
            if word is None:
                finish, word = "stop", ""  # the end of sequence: vLLM shows no text for it
            else:
                produced += 1
                text += word
            cut = min((i for i in (text.find(stop) for stop in stops) if i >= 0), default=-1)
            if cut >= 0:
                text, finish = text[:cut], "stop"
            elif finish is None and produced >= max_tokens:
                finish = "length"
            visible = len(text) if finish else max(sent, len(text) - hold)
            delta, sent = text[sent:visible], visible
            yield self._response(request, delta, finish, input_tokens, 1 if word else 0, flags)
            if finish:
                return

    @staticmethod
    def _response(request: service_pb2.ModelInferRequest, text: str, finish: str | None, input_tokens: int,
                  output_tokens: int, flags: dict[str, bool]) -> service_pb2.ModelStreamInferResponse:
        response = service_pb2.ModelInferResponse(model_name=request.model_name, model_version="1", id=request.id)
        outputs: list[tuple[str, str, bytes]] = [("text_output", "BYTES", _bytes_element(text.encode()))]
        if flags.get("return_finish_reason"):
            outputs.append(("finish_reason", "BYTES", _bytes_element(str(finish).encode())))
        if flags.get("return_num_input_tokens"):
            outputs.append(("num_input_tokens", "UINT32", _UINT32.pack(input_tokens)))
        if flags.get("return_num_output_tokens"):
            outputs.append(("num_output_tokens", "UINT32", _UINT32.pack(output_tokens)))
        for name, datatype, raw in outputs:
            response.outputs.add(name=name, datatype=datatype, shape=[1])
            response.raw_output_contents.append(raw)
        response.parameters["triton_final_response"].bool_param = finish is not None
        return service_pb2.ModelStreamInferResponse(infer_response=response)

    async def serve(self) -> grpc.aio.Server:
        server = grpc.aio.server()
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(_Servicer(self), server)
        self.port = self.port or free_port()
        server.add_insecure_port(self.address)
        await server.start()
        return server

    def start_in_thread(self) -> None:
        """Serves from a thread with its own event loop until stop()."""
        started = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(self.serve())
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="triton-test-server", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the Triton test server did not start")

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._server.stop(0), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


async def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    args = parser.parse_args()
    test_server = TritonTestServer(models={args.model: True}, port=args.port)
    server = await test_server.serve()
    print(f"Triton test server on {test_server.address}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(_main())
