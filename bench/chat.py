"""Streaming chat completions on the embedded model: our gateway against llama-cpp-python in-process and against
its own OpenAI server (`python -m llama_cpp.server`), in one run, same GGUF, same prompt and parameters.

    .venv/bin/python -m bench.chat [--runs 10] [--streams 4] [--vary] [--models JSON] [--no-peer] [--no-inprocess]

Needs `pip install 'llama-cpp-python[server]==0.3.36'` for the peer server (the llama wheel is already there, so
only FastAPI/uvicorn & co. are added); `--no-peer` skips it.

All three run side by side for the whole bench (idle ones cost nothing) and are measured interleaved, the order
rotating every run, so drift on a shared machine hits every side alike. Each side gets 2 warm-up requests, then
`--runs` single streams and (servers only) `--runs` rounds of `--streams` concurrent streams.
- Request: "Explain in two sentences what an API gateway does.", temperature 0, max_tokens 64, and
  repeat_penalty 1.0 (llama.cpp's neutral value, which ours and in-process use; llama_cpp.server would default to
  1.1 and so give a different greedy answer; our server ignores the field). Streaming with the openai SDK,
  stream_options.include_usage.
- TTFT: from sending the request to the first chunk with non-empty content.
- Tokens: completion tokens without the end-of-generation token. Our usage counts that token (it is sampled like
  any other, as vLLM reports it); llama-cpp-python's does not, so 1 is taken off ours when finish_reason is
  "stop". In-process, tokens = content chunks (one per token; the answer is plain ASCII).
- decode tok/s = tokens / (end of stream - first content chunk); end-to-end tok/s = tokens / (end - request sent).
- Concurrent: aggregate tok/s = all tokens of a round / (last stream's end - first request sent); p95 TTFT over
  every stream of every round.
The in-process side is a worker subprocess with every llama call on its main thread (calling llama.cpp from two
threads of one process slows the later thread's OpenMP team), n_threads=2, driven one stream at a time over
stdin. `--vary` puts a fresh number in front of every prompt, so only the system-prompt prefix can come from the
KV cache.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx2

from bench import (
    ROOT,
    guest_token,
    machine_line,
    median,
    percentile,
    print_table,
    running_stack,
    tree_memory,
    verdict,
)
from server.core.config import bundled_smollm2_path
from tests.support.ports import free_port

PROMPT = "Explain in two sentences what an API gateway does."
MAX_TOKENS = 64
OUR_MODEL = "smollm2-135m-instruct"
TARGET_VS_INPROCESS = 0.95
TARGET_VS_PEER_SINGLE = 1.4
TARGET_VS_PEER_CONCURRENT = 1.6
WARMUP = 2  # requests per side before measuring


@dataclass
class Stream:
    ttft: float  # seconds
    tokens: int
    decode_seconds: float  # first content chunk -> end of stream
    total_seconds: float  # request sent -> end of stream
    started: float = 0.0
    ended: float = 0.0
    finish_reason: str | None = None

    @property
    def decode_rate(self) -> float:
        return self.tokens / self.decode_seconds if self.decode_seconds > 0 else float("nan")

    @property
    def e2e_rate(self) -> float:
        return self.tokens / self.total_seconds


@dataclass
class Side:
    name: str
    single: list[Stream] = field(default_factory=list)
    rounds: list[list[Stream]] = field(default_factory=list)
    memory: str = ""

    def aggregate_rates(self) -> list[float]:
        return [
            sum(s.tokens for s in streams) / (max(s.ended for s in streams) - min(s.started for s in streams))
            for streams in self.rounds
        ]


def prompt_for(index: int, vary: bool) -> str:
    return f"{index}. {PROMPT}" if vary else PROMPT


class _Counter:
    def __init__(self) -> None:
        self._value = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._value += 1
            return self._value


def openai_stream(client, model: str, prompt: str, eos_in_usage: bool) -> Stream:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    first = None
    chunks = 0
    usage = None
    finish_reason = None
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        temperature=0,
        max_tokens=MAX_TOKENS,
        stream=True,
        stream_options={"include_usage": True},
        # llama_cpp.server defaults to 1.1 (a different greedy answer); 1.0 is what in-process and ours use.
        extra_body={"repeat_penalty": 1.0},
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                chunks += 1
                if first is None:
                    first = time.perf_counter()
            if choice.finish_reason:
                finish_reason = choice.finish_reason
    ended = time.perf_counter()
    if first is None:
        raise RuntimeError("the stream had no content")
    tokens = usage.completion_tokens if usage is not None else chunks
    if usage is not None and eos_in_usage and finish_reason == "stop":
        tokens -= 1
    return Stream(first - started, tokens, ended - first, ended - started, started, ended, finish_reason)


class OpenAISide:
    """A server spoken to with the openai SDK (streaming), one httpx pool for all its streams."""

    def __init__(self, name: str, base_url: str, api_key: str, model: str, eos_in_usage: bool,
                 args: argparse.Namespace) -> None:
        from openai import OpenAI

        self.result = Side(name)
        self._model = model
        self._eos_in_usage = eos_in_usage
        self._vary = args.vary
        self._counter = _Counter()
        self._http = httpx2.Client(
            trust_env=False, timeout=120, limits=httpx2.Limits(max_connections=args.streams + 2)
        )
        self._client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, http_client=self._http)

    def stream(self) -> Stream:
        prompt = prompt_for(self._counter.next(), self._vary)
        return openai_stream(self._client, self._model, prompt, self._eos_in_usage)

    def concurrent(self, streams: int) -> list[Stream]:
        barrier = threading.Barrier(streams)
        results: list[Stream | BaseException] = []

        def one() -> None:
            barrier.wait()
            try:
                results.append(self.stream())
            except BaseException as error:  # re-raised below
                results.append(error)

        threads = [threading.Thread(target=one) for _ in range(streams)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [r for r in results if isinstance(r, Stream)]

    def close(self) -> None:
        self._http.close()


def memory_summary(pid: int) -> str:
    rows = tree_memory(pid)
    rss = sum(r[1] for r in rows)
    pss = sum(r[2] for r in rows)
    parts = ", ".join(f"{name} {r} MiB" for name, r, _ in rows)
    return f"RSS {rss} MiB (PSS {pss} MiB): {parts}"


# --- our gateway -------------------------------------------------------------------------------------------


@contextmanager
def our_side(args: argparse.Namespace) -> Iterator[tuple[OpenAISide, int]]:
    settings = {"models": args.models} if args.models else {}
    with running_stack(**settings) as stack:
        assert stack.process is not None
        side = OpenAISide("ours (gateway)", stack.base_url + "/v1", guest_token(stack), OUR_MODEL, True, args)
        try:
            yield side, stack.process.pid
        finally:
            side.close()


# --- in-process llama-cpp-python (a subprocess worker) -----------------------------------------------------


def inprocess_worker(args: argparse.Namespace) -> None:
    """Its own process, every llama call on its main thread. Reads one command a line from stdin: a number runs
    one stream with that prompt index and prints it as JSON; `quit` prints the RSS and exits."""
    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=bundled_smollm2_path(), n_ctx=2048, n_threads=2, n_threads_batch=2, verbose=False
    )
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        started = time.perf_counter()
        first = None
        tokens = 0
        finish_reason = None
        chunks: Iterator[dict[str, Any]] = llm.create_chat_completion(  # type: ignore[assignment]
            messages=[{"role": "user", "content": prompt_for(int(line), args.vary)}],
            temperature=0,
            max_tokens=MAX_TOKENS,
            repeat_penalty=1.0,
            stream=True,
        )
        for chunk in chunks:
            choice = chunk["choices"][0]
            if choice["delta"].get("content"):
                tokens += 1
                if first is None:
                    first = time.perf_counter()
            finish_reason = choice.get("finish_reason") or finish_reason
        ended = time.perf_counter()
        assert first is not None
        print(json.dumps({"ttft": first - started, "tokens": tokens, "decode_seconds": ended - first,
                          "total_seconds": ended - started, "finish_reason": finish_reason}), flush=True)
    with open(f"/proc/{os.getpid()}/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    print(json.dumps({"rss_mib": rss // 1024}), flush=True)


class InProcessSide:
    def __init__(self, args: argparse.Namespace) -> None:
        command = [sys.executable, "-m", "bench.chat", "--worker"] + (["--vary"] if args.vary else [])
        self.result = Side("llama-cpp-python in-process")
        self._counter = _Counter()
        self._process = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         text=True)
        if self._readline() != "ready":
            raise RuntimeError("the in-process worker did not start")

    def _readline(self) -> str:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the in-process worker exited ({self._process.wait()})")
        return line.strip()

    def _send(self, command: str) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()

    def stream(self) -> Stream:
        self._send(str(self._counter.next()))
        return Stream(**json.loads(self._readline()))

    def close(self) -> None:
        if self._process.poll() is None:
            self._send("quit")
            self.result.memory = f"RSS {json.loads(self._readline())['rss_mib']} MiB"
            self._process.wait(10)


# --- llama_cpp.server --------------------------------------------------------------------------------------


@contextmanager
def peer_side(args: argparse.Namespace) -> Iterator[tuple[OpenAISide, int]]:
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", bundled_smollm2_path(),
        "--n_threads", "2", "--n_threads_batch", "2", "--n_ctx", "2048", "--interrupt_requests", "False",
        "--verbose", "False", "--host", "127.0.0.1", "--port", str(port),
    ]
    log = tempfile.TemporaryFile("w+")  # not a pipe: nobody reads it while the server runs
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}/v1"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError("llama_cpp.server exited:\n" + log.read()[-4000:])
            try:
                with opener.open(base + "/models", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("llama_cpp.server did not become ready")
            time.sleep(0.2)
        side = OpenAISide("llama_cpp.server", base, "none", "smollm2", False, args)
        try:
            yield side, process.pid
        finally:
            side.close()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


# --- report ------------------------------------------------------------------------------------------------


def spread(values: list[float], fmt: str, scale: float = 1.0) -> str:
    if not values:
        return "-"
    scaled = [v * scale for v in values]
    return f"{format(median(scaled), fmt)} ({format(min(scaled), fmt)}-{format(max(scaled), fmt)})"


def report(sides: list[Side], args: argparse.Namespace) -> None:
    print(f"\nSingle stream, {args.runs} runs per side after {WARMUP} warm-up requests: median (min-max)\n")
    rows = []
    for side in sides:
        s = side.single
        rows.append([
            side.name,
            spread([x.ttft for x in s], ".0f", 1000),
            spread([x.decode_rate for x in s], ".1f"),
            spread([x.e2e_rate for x in s], ".1f"),
            spread([float(x.tokens) for x in s], ".0f"),
        ])
    print_table(["side", "TTFT ms", "decode tok/s", "end-to-end tok/s", "tokens"], rows)

    concurrent = [side for side in sides if side.rounds]
    if concurrent:
        print(f"\n{args.streams} concurrent streams, {args.runs} rounds: median (min-max)\n")
        rows = []
        for side in concurrent:
            ttfts = [x.ttft for streams in side.rounds for x in streams]
            rows.append([
                side.name,
                spread(side.aggregate_rates(), ".1f"),
                f"{percentile(ttfts, 0.95) * 1000:.0f}",
                f"{median(ttfts) * 1000:.0f}",
                spread([x.decode_rate for streams in side.rounds for x in streams], ".1f"),
            ])
        print_table(["side", "aggregate tok/s", "p95 TTFT ms", "p50 TTFT ms", "per-stream decode tok/s"], rows)

    print("\nMemory:\n")
    for side in sides:
        if side.memory:
            print(f"- {side.name}: {side.memory}")

    by_name = {side.name: side for side in sides}
    ours = by_name.get("ours (gateway)")
    if ours is None:
        return
    rows = []

    def ratio_row(label: str, mine: float, theirs: float, target: float) -> None:
        value = mine / theirs
        rows.append([label, f"{mine:.1f} / {theirs:.1f}", f"{value:.2f}x", f">= {target}x", verdict(value >= target)])

    ours_decode = median([x.decode_rate for x in ours.single])
    inprocess = by_name.get("llama-cpp-python in-process")
    if inprocess:
        ratio_row("decode tok/s, ours / in-process", ours_decode,
                  median([x.decode_rate for x in inprocess.single]), TARGET_VS_INPROCESS)
    peer = by_name.get("llama_cpp.server")
    if peer:
        ratio_row("decode tok/s, ours / llama_cpp.server", ours_decode,
                  median([x.decode_rate for x in peer.single]), TARGET_VS_PEER_SINGLE)
        rows.append([
            "(end-to-end tok/s, ours / llama_cpp.server)",
            f"{median([x.e2e_rate for x in ours.single]):.1f} / {median([x.e2e_rate for x in peer.single]):.1f}",
            f"{median([x.e2e_rate for x in ours.single]) / median([x.e2e_rate for x in peer.single]):.2f}x",
            "-", "-",
        ])
        ratio_row(f"{args.streams}-stream aggregate tok/s, ours / llama_cpp.server",
                  median(ours.aggregate_rates()), median(peer.aggregate_rates()), TARGET_VS_PEER_CONCURRENT)
    print("\nTargets (medians):\n")
    print_table(["figure", "ours / theirs", "ratio", "target", "result"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="single streams, and concurrent rounds, per side")
    parser.add_argument("--streams", type=int, default=4, help="concurrent streams per round")
    parser.add_argument("--vary", action="store_true", help="a different prompt every request (no prefix reuse)")
    parser.add_argument("--models", default="", help="JAN_MODELS for our stack (default: the built-in default)")
    parser.add_argument("--no-peer", action="store_true", help="skip llama_cpp.server")
    parser.add_argument("--no-inprocess", action="store_true", help="skip in-process llama-cpp-python")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        inprocess_worker(args)
        return

    print(f"# bench.chat — {machine_line()}")
    print(f"prompt {PROMPT!r}{' (varied)' if args.vary else ''}, temperature 0, max_tokens {MAX_TOKENS}; "
          f"our models: {args.models or 'default settings'}")
    with ExitStack() as servers:
        ours, ours_pid = servers.enter_context(our_side(args))
        time.sleep(2)  # let startup settle before reading memory
        idle = memory_summary(ours_pid)
        sides: list[OpenAISide | InProcessSide] = [ours]
        if not args.no_inprocess:
            inprocess = InProcessSide(args)
            servers.callback(inprocess.close)
            sides.append(inprocess)
        peer_pid = None
        if not args.no_peer:
            peer, peer_pid = servers.enter_context(peer_side(args))
            sides.append(peer)
            time.sleep(1)
            peer.result.memory = f"idle {memory_summary(peer_pid)}"
        for side in sides:
            for _ in range(WARMUP):
                side.stream()
        # Interleaved, with the order rotating, so drift on a shared box hits every side alike.
        for run in range(args.runs):
            for side in sides[run % len(sides):] + sides[: run % len(sides)]:
                side.result.single.append(side.stream())
        served = [side for side in sides if isinstance(side, OpenAISide)]
        for run in range(args.runs):
            for side in served[run % len(served):] + served[: run % len(served)]:
                side.result.rounds.append(side.concurrent(args.streams))
        ours.result.memory = f"idle {idle}; after the bench {memory_summary(ours_pid)}"
        if peer_pid is not None:
            sides[-1].result.memory += f"; after the bench {memory_summary(peer_pid)}"
    report([side.result for side in sides], args)

if __name__ == "__main__":
    main()
