"""What the `triton` backend adds: chat completions through our gateway (Envoy → gRPC services → the triton backend →
Triton) against calling the same Triton directly over gRPC, in one run, with bench/upstream.py's method.

    .venv/bin/python -m bench.triton [--runs 40] [--stream-tokens 64]

Triton needs a GPU, so "Triton" is the KServe v2 Triton test server (tests/support/triton_test_server.py) in its
own process, on the real wire (tritonclient's stubs); it answers at once, so the figures are the gateway's cost
alone. One stack whose only model is a `triton` one pointing at it. Ours is driven like bench.upstream's sides
(`http.client`, one keep-alive HTTP/1.1 connection); direct is grpcio's sync client on one channel sending the
exact request our backend sends (the same rendered prompt and sampling parameters) and reading the stream to its
end: Triton's vLLM models only stream, so a direct "non-stream chat" is a whole stream. Requests alternate
between the sides, temperature 0; the prompt holds the test server's `[long]`, so every answer runs to max_tokens.
- Non-stream: max_tokens 4; added latency = p50(ours) - p50(direct).
- Stream: max_tokens 4; TTFT = request sent → first chunk with non-empty content; added = p50 difference.
- CPU per chunk: utime+stime of our services process and of Envoy over `--runs` streams of `--stream-tokens`
  tokens, divided by the content chunks they carried, and the marginal figure (long minus 4-token streams).
Targets (issue 7): ≤ 1 ms added to a non-stream chat, ≤ 2 ms to TTFT, ≤ 0.2 ms of CPU per chunk. LiteLLM adds
8.3 ms, 21 ms and ~1.8 ms.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.grpc._utils import _get_inference_request

from bench import ROOT, guest_token, machine_line, running_stack
from bench.upstream import SHORT_TOKENS, Side, our_processes, report, stream_cpu
from server.llm.backends.base import ChatMessage, SamplingParams
from server.llm.backends.chat_template import load_chat_template
from server.llm.backends.triton_wire import decode_response, infer_request, sampling_parameters
from tests.support.ports import free_port
from tests.support.triton_test_server import DEFAULT_MODEL

PROMPT = "[long] Explain in two sentences what an API gateway does."
OUR_MODEL = "qwen2.5"
CONTEXT_SIZE = 8192


@dataclass
class DirectTriton:
    """Triton called as our backend calls it, minus our gateway."""

    address: str
    name: str = "Triton test server direct (gRPC)"
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    stream_totals: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.channel = grpc.insecure_channel(self.address)
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)
        template = load_chat_template(str(ROOT / "triton_models" / DEFAULT_MODEL / "tokenizer_config.json"))
        self.prompt = template.template.render([ChatMessage("user", PROMPT)])
        self.eos = template.eos_token

    def _request(self, max_tokens: int) -> service_pb2.ModelInferRequest:
        sampling = sampling_parameters(SamplingParams(max_tokens=max_tokens, temperature=0), CONTEXT_SIZE, self.eos)
        wire: dict[str, Any] = infer_request(DEFAULT_MODEL, "direct", self.prompt, sampling)
        return _get_inference_request(
            model_name=wire["model_name"], inputs=wire["inputs"], model_version="", request_id=wire["request_id"],
            outputs=None, sequence_id=0, sequence_start=False, sequence_end=False, priority=0, timeout=None,
            parameters=None,
        )

    def stream(self, max_tokens: int) -> tuple[float, int, float]:
        """(TTFT in seconds, pieces with text, seconds to the end of the call)."""
        request = self._request(max_tokens)
        started = time.perf_counter()
        ttft, chunks = 0.0, 0
        for response in self.stub.ModelStreamInfer(iter([request])):
            if response.error_message:
                raise RuntimeError(response.error_message)
            if decode_response(response.infer_response).text:
                chunks += 1
                if chunks == 1:
                    ttft = time.perf_counter() - started
        return ttft, chunks, time.perf_counter() - started

    def complete(self) -> float:
        return self.stream(SHORT_TOKENS)[2]

    def close(self) -> None:
        self.channel.close()


def start_test_server() -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tests.support.triton_test_server", "--port", str(port)],
                               cwd=ROOT, stdout=subprocess.DEVNULL, text=True)
    address = f"127.0.0.1:{port}"
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=20)
        live = service_pb2_grpc.GRPCInferenceServiceStub(channel).ServerLive(service_pb2.ServerLiveRequest())
        assert live.live
    return process, address


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--stream-tokens", type=int, default=64)
    args = parser.parse_args()
    print(machine_line())

    triton, address = start_test_server()
    try:
        models = [{"id": OUR_MODEL, "backend": "triton", "triton_url": address, "upstream_model": DEFAULT_MODEL,
                   "context_size": CONTEXT_SIZE}]
        with running_stack(models=json.dumps(models)) as stack:
            assert stack.process is not None
            direct = DirectTriton(address)
            ours = Side("through Jan (Envoy + triton backend)", f"{stack.base_url}/v1", OUR_MODEL,
                        guest_token(stack), prompt=PROMPT)
            sides: list[DirectTriton | Side] = [direct, ours]
            try:
                for side in sides:  # warm-up: connections, channels, our pools
                    for _ in range(3):
                        side.complete()
                        side.stream(SHORT_TOKENS)
                for run in range(args.runs):
                    for side in sides if run % 2 == 0 else sides[::-1]:
                        side.latencies.append(side.complete())
                        ttft, _, total = side.stream(SHORT_TOKENS)
                        side.ttfts.append(ttft)
                        side.stream_totals.append(total)
                pids = our_processes(stack.process.pid)
                long_cpu, long_chunks = stream_cpu(ours, pids, args.runs, args.stream_tokens)
                short_cpu, short_chunks = stream_cpu(ours, pids, args.runs, SHORT_TOKENS)
            finally:
                for side in sides:
                    side.close()
    finally:
        triton.send_signal(signal.SIGTERM)
        triton.wait(10)

    report(direct, ours, long_cpu, long_chunks, short_cpu, short_chunks, args)


if __name__ == "__main__":
    main()
