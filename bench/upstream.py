"""What the `openai` upstream backend adds: chat completions through our gateway (Envoy → gRPC services → the
backend → llama_cpp.server) against calling the same llama_cpp.server directly, in one run.

    .venv/bin/python -m bench.upstream [--runs 40] [--stream-tokens 64]

Needs the peer server's extra (`pip install 'llama-cpp-python[server]==0.3.36'`, in the dev extra). One
llama_cpp.server (2 threads, n_ctx 2048) and one stack whose only model is an `openai` one pointing at it. Both
sides are driven by the same client: `http.client` on one keep-alive HTTP/1.1 connection per side, so client cost
cancels out in the differences. Requests alternate between the sides, every prompt is the same (the upstream's
prefix cache hits on both), temperature 0.
- Non-stream: max_tokens 4; added latency = p50(ours) - p50(direct).
- Stream: max_tokens 4; TTFT = request sent → first chunk with non-empty content; added = p50 difference.
- CPU per chunk: utime+stime (from /proc/<pid>/stat) of our Python services process and of Envoy, summed over
  `--runs` streams of `--stream-tokens` tokens, divided by the content chunks they carried. It includes the
  per-request work (auth, parsing, envelope), spread over the chunks; the marginal figure (CPU of a long stream minus
  that of a 4-token one, per extra chunk) leaves it out.
Targets (issue 7): ≤ 1 ms added to a non-stream chat, ≤ 2 ms to TTFT, ≤ 0.2 ms of CPU per chunk. LiteLLM,
measured on the same upstream, adds 8.3 ms, 21 ms and ~1.8 ms.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

from bench import guest_token, machine_line, median, print_table, process_tree, running_stack, verdict
from tests.support.llama_server import start_llama_server

PROMPT = "Explain in two sentences what an API gateway does."
UPSTREAM_MODEL = "upstream-smollm2"
SHORT_TOKENS = 4
TARGET_ADDED_LATENCY_MS = 1.0
TARGET_ADDED_TTFT_MS = 2.0
TARGET_CPU_PER_CHUNK_MS = 0.2
# A chunk with non-empty delta content, in our compact JSON and in llama_cpp.server's spaced one.
CONTENT = re.compile(rb'"content": ?"[^"]')
CLOCK_TICK = 1 / os.sysconf("SC_CLK_TCK")


@dataclass
class Side:
    name: str
    url: str  # the API root: http://host:port/v1
    model: str
    token: str = ""
    prompt: str = PROMPT
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    stream_totals: list[float] = field(default_factory=list)  # a whole max_tokens-4 stream, request to [DONE]

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        self.path = parts.path.rstrip("/") + "/chat/completions"
        self.connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)

    def _send(self, max_tokens: int, stream: bool) -> http.client.HTTPResponse:
        body = {"model": self.model, "messages": [{"role": "user", "content": self.prompt}], "temperature": 0,
                "max_tokens": max_tokens, "stream": stream}
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        self.connection.request("POST", self.path, body=json.dumps(body).encode(), headers=headers)
        response = self.connection.getresponse()
        if response.status != 200:
            raise RuntimeError(f"{self.name}: {response.status} {response.read()[:300]!r}")
        return response

    def complete(self) -> float:
        started = time.perf_counter()
        response = self._send(SHORT_TOKENS, stream=False)
        json.loads(response.read())
        return time.perf_counter() - started

    def stream(self, max_tokens: int) -> tuple[float, int, float]:
        """(TTFT in seconds, content chunks, seconds to `data: [DONE]`)."""
        started = time.perf_counter()
        response = self._send(max_tokens, stream=True)
        ttft, chunks = 0.0, 0
        while line := response.readline():
            if line.startswith(b"data: [DONE]"):
                break
            if line.startswith(b"data: ") and CONTENT.search(line):
                chunks += 1
                if chunks == 1:
                    ttft = time.perf_counter() - started
        total = time.perf_counter() - started
        response.read()  # the chunked terminator, so the connection can be reused
        return ttft, chunks, total

    def close(self) -> None:
        self.connection.close()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * CLOCK_TICK


def cpu_of(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def stream_cpu(side: Side, pids: dict[str, int], runs: int, max_tokens: int) -> tuple[dict[str, float], int]:
    """CPU seconds per process over `runs` streams, and the content chunks they carried."""
    before, chunks = cpu_of(pids), 0
    for _ in range(runs):
        chunks += side.stream(max_tokens)[1]
    after = cpu_of(pids)
    return {name: after[name] - before[name] for name in pids}, chunks


def our_processes(stack_pid: int) -> dict[str, int]:
    """The Python services process and Envoy (its child)."""
    pids = {"services": stack_pid}
    for pid in process_tree(stack_pid):
        with open(f"/proc/{pid}/comm") as comm:
            if comm.read().strip().startswith("envoy"):
                pids["envoy"] = pid
    return pids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--stream-tokens", type=int, default=64)
    args = parser.parse_args()
    print(machine_line())

    llama = start_llama_server(threads=2)
    try:
        models = [{"id": UPSTREAM_MODEL, "backend": "openai", "base_url": llama.base_url}]
        with running_stack(models=json.dumps(models)) as stack:
            assert stack.process is not None
            direct = Side("llama_cpp.server direct", llama.base_url, "smollm2")
            ours = Side("through Jan (Envoy + openai backend)", f"{stack.base_url}/v1", UPSTREAM_MODEL,
                        guest_token(stack))
            sides = [direct, ours]
            try:
                for side in sides:  # warm-up: connections, the upstream's prefix cache, our pools
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
        llama.stop()

    report(direct, ours, long_cpu, long_chunks, short_cpu, short_chunks, args)


class Measured(Protocol):
    """A side's timings, whatever it calls (bench.triton's direct side is a gRPC client)."""

    name: str
    latencies: list[float]
    ttfts: list[float]
    stream_totals: list[float]


def report(direct: Measured, ours: Measured, long_cpu: dict[str, float], long_chunks: int,
           short_cpu: dict[str, float], short_chunks: int, args: argparse.Namespace) -> None:
    ms = 1000.0
    print(f"\n{args.runs} runs per side, interleaved, after 3 warm-up requests; p50 (min)\n")
    print_table(["side", f"non-stream chat, max_tokens {SHORT_TOKENS} (ms)", "stream TTFT (ms)",
                 "whole stream (ms)"], [
        [side.name, f"{median(side.latencies) * ms:.2f} ({min(side.latencies) * ms:.2f})",
         f"{median(side.ttfts) * ms:.2f} ({min(side.ttfts) * ms:.2f})",
         f"{median(side.stream_totals) * ms:.2f} ({min(side.stream_totals) * ms:.2f})"]
        for side in (direct, ours)
    ])
    # Our non-stream chat streams from the upstream: part of its added latency is the upstream's streaming mode
    # (a direct side that only streams, as Triton's vLLM models do, measured its whole stream: the two are equal).
    over_stream = (median(ours.latencies) - median(direct.stream_totals)) * ms
    added_latency = (median(ours.latencies) - median(direct.latencies)) * ms
    added_ttft = (median(ours.ttfts) - median(direct.ttfts)) * ms
    total_long = sum(long_cpu.values())
    per_chunk = total_long / long_chunks * ms
    marginal = (total_long - sum(short_cpu.values())) / max(long_chunks - short_chunks, 1) * ms
    print(f"\nCPU over {args.runs} streams of {args.stream_tokens} tokens ({long_chunks} content chunks) and of "
          f"{SHORT_TOKENS} tokens ({short_chunks} chunks): "
          + ", ".join(f"{name} {long_cpu[name]:.2f} s / {short_cpu[name]:.2f} s" for name in long_cpu) + "\n")
    print_table(["metric", "value", "target", "LiteLLM", "verdict"], [
        ["added p50 latency, non-stream chat (ms)", f"{added_latency:.2f}", f"≤ {TARGET_ADDED_LATENCY_MS}", "8.3",
         verdict(added_latency <= TARGET_ADDED_LATENCY_MS)],
        ["  of it, over the upstream's own whole stream (ms)", f"{over_stream:.2f}", "-", "-", "-"],
        ["added p50 TTFT, stream (ms)", f"{added_ttft:.2f}", f"≤ {TARGET_ADDED_TTFT_MS}", "21",
         verdict(added_ttft <= TARGET_ADDED_TTFT_MS)],
        ["our CPU per streamed chunk, services + Envoy (ms)", f"{per_chunk:.3f}", f"≤ {TARGET_CPU_PER_CHUNK_MS}",
         "~1.8", verdict(per_chunk <= TARGET_CPU_PER_CHUNK_MS)],
        ["  of it, services process (ms)", f"{long_cpu['services'] / long_chunks * ms:.3f}", "-", "-", "-"],
        ["  marginal CPU per extra chunk (ms)", f"{marginal:.3f}", f"≤ {TARGET_CPU_PER_CHUNK_MS}", "-",
         verdict(marginal <= TARGET_CPU_PER_CHUNK_MS)],
        ["ratio non-stream p50, ours / direct", f"{median(ours.latencies) / median(direct.latencies):.3f}x", "-",
         "-", "-"],
        ["ratio TTFT p50, ours / direct", f"{median(ours.ttfts) / median(direct.ttfts):.3f}x", "-", "-", "-"],
    ])


if __name__ == "__main__":
    main()
