"""Streaming chat completions on the embedded model: our gateway against llama-cpp-python in-process and against
its own OpenAI server (`python -m llama_cpp.server`), in one run, same GGUF, same prompt and parameters.

    .venv/bin/python -m bench.chat [--runs 10] [--streams 4] [--client {sdk,lean,both}] [--vary] [--models JSON]
                                   [--no-peer] [--no-inprocess]

Needs `pip install 'llama-cpp-python[server]==0.3.36'` for the peer server (the llama wheel is already there, so
only FastAPI/uvicorn & co. are added); `--no-peer` skips it.

Clients (`--client`, default both). The two servers are measured with the openai SDK and with a lean raw-socket
client, as separate sides. On 2 cores the SDK costs ~0.6 ms of CPU per streamed token (pydantic models per SSE
chunk), taken from the decode threads, while in-process has no client at all; the lean client shows the servers
with (almost) no client cost. It keeps one keep-alive HTTP/1.1 connection per concurrent stream, builds the request
bytes before the clock starts (the SDK's body: model, messages, temperature, max_tokens, stream, stream_options,
repeat_penalty, with the Authorization header), reads the response incrementally (chunked, Content-Length or
read-to-close), looks at SSE `data:` lines with byte checks only (non-empty `"content":"`, finish_reason,
`data: [DONE]`) and JSON-parses only the usage chunk. Both servers answer with chunked SSE.

All sides run side by side for the whole bench (idle ones cost nothing) and are measured interleaved, the order
rotating every run, so drift on a shared machine hits every side alike. Each side gets 2 warm-up requests, then
`--runs` single streams and (servers only, with each client) `--runs` rounds of `--streams` concurrent streams.
- Request: "Explain in two sentences what an API gateway does.", temperature 0, max_tokens 64, and
  repeat_penalty 1.0 (llama.cpp's neutral value, which ours and in-process use; llama_cpp.server would default to
  1.1 and so give a different greedy answer; our server ignores the field), stream_options.include_usage.
- TTFT: from sending the request to the first chunk with non-empty content.
- Tokens: completion tokens without the end-of-generation token. Our usage counts that token (it is sampled like
  any other, as vLLM reports it), so 1 is taken off ours when finish_reason is "stop". llama_cpp.server sends no
  usage chunk when streaming, and in-process has none: there, tokens = content chunks (one per token; the answer
  is plain ASCII). Both clients apply the same rule.
- decode tok/s = tokens / (end of stream - first content chunk); end-to-end tok/s = tokens / (end - request sent).
  End of stream: the SDK's iterator is exhausted; the lean client has read `data: [DONE]`.
- Concurrent: aggregate tok/s = all tokens of a round / (last stream's end - first request sent); p95 TTFT over
  every stream of every round.
The targets are reported per client kind, each ratio between sides measured with the same client (in-process has
none). The in-process side is a worker subprocess with every llama call on its main thread (calling llama.cpp from
two threads of one process slows the later thread's OpenMP team), n_threads=2, driven one stream at a time over
stdin. `--vary` puts a fresh number in front of every prompt, so only the system-prompt prefix can come from the
KV cache.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx2

from bench import (
    ROOT,
    RawConnection,
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
CLIENT_LABELS = {"sdk": "openai SDK", "lean": "lean client"}
WARMUP = 2  # requests per side before measuring
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)")  # on the lower-cased head


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
    server: str = ""  # "ours", "inprocess" or "peer"
    client: str = ""  # "sdk", "lean" or "" (in-process: no client)
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


def run_concurrently(stream: Callable[[], Stream], streams: int) -> list[Stream]:
    """`streams` calls of stream() at once, one thread each, released together by a barrier."""
    barrier = threading.Barrier(streams)
    results: list[Stream | BaseException] = []

    def one() -> None:
        barrier.wait()
        try:
            results.append(stream())
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

    def __init__(self, server: str, label: str, base_url: str, api_key: str, model: str, eos_in_usage: bool,
                 args: argparse.Namespace) -> None:
        from openai import OpenAI

        self.result = Side(f"{label} (openai SDK)", server, "sdk")
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
        return run_concurrently(self.stream, streams)

    def close(self) -> None:
        self._http.close()


# --- the lean client: raw-socket HTTP/1.1 ------------------------------------------------------------------


class _Connection(RawConnection):
    """One keep-alive HTTP/1.1 connection that notices when the server dropped it."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port, timeout=120)
        self.reusable = True

    def pieces(self, size: int) -> Iterator[bytes]:
        """The next `size` bytes, yielded as they arrive."""
        while size:
            if not self.buffer:
                self.buffer = self.recv()
            piece = self.buffer[:size]
            self.buffer = self.buffer[len(piece) :]
            size -= len(piece)
            yield piece

    def stale(self) -> bool:
        """True when the server has closed the idle connection (uvicorn does after 5 s) or sent something."""
        readable, _, _ = select.select([self.sock], [], [], 0)
        return bool(readable) or bool(self.buffer)


def _body(connection: _Connection, head: bytes) -> Iterator[bytes]:
    """The response body as it arrives: chunked, Content-Length or read-to-close framing."""
    headers = head.lower()
    if b"\r\ntransfer-encoding: chunked" in headers or b"\r\ntransfer-encoding:chunked" in headers:
        while True:
            while (end := connection.buffer.find(b"\r\n")) < 0:
                connection.buffer += connection.recv()
            size = int(connection.buffer[:end].split(b";", 1)[0], 16)
            connection.buffer = connection.buffer[end + 2 :]
            if size == 0:  # trailers (none expected), then the blank line
                while (end := connection.buffer.find(b"\r\n")) != 0:
                    if end < 0:
                        connection.buffer += connection.recv()
                    else:
                        connection.buffer = connection.buffer[end + 2 :]
                connection.buffer = connection.buffer[2:]
                return
            yield from connection.pieces(size)
            while len(connection.buffer) < 2:
                connection.buffer += connection.recv()
            connection.buffer = connection.buffer[2:]  # the chunk's CRLF
    elif (match := _CONTENT_LENGTH.search(headers)) is not None:
        yield from connection.pieces(int(match.group(1)))
    else:  # read until the server closes
        connection.reusable = False
        if connection.buffer:
            yield connection.buffer
            connection.buffer = b""
        while data := connection.sock.recv(65536):
            yield data


def _value_at(line: bytes, key: bytes) -> int | None:
    """Where the JSON value of `"key":` starts in an SSE line (a space after the colon allowed), or None."""
    at = line.find(b'"' + key + b'":')
    if at < 0:
        return None
    at += len(key) + 3
    return at + 1 if line[at : at + 1] == b" " else at


def _has_content(line: bytes) -> bool:
    """`"content":` followed by a non-empty string."""
    at = _value_at(line, b"content")
    return at is not None and line[at : at + 1] == b'"' and line[at + 1 : at + 2] != b'"'


def _finish_reason(line: bytes) -> str | None:
    at = _value_at(line, b"finish_reason")
    if at is None or line[at : at + 1] != b'"':
        return None  # absent or null
    return line[at + 1 : line.index(b'"', at + 1)].decode()


class LeanSide:
    """A server spoken to over raw sockets: keep-alive HTTP/1.1 connections (one per concurrent stream), the
    request bytes built before the clock starts, the SSE stream read line by line with byte checks (content,
    finish_reason, `data: [DONE]`); only the usage chunk is JSON-parsed."""

    def __init__(self, server: str, label: str, base_url: str, api_key: str, model: str, eos_in_usage: bool,
                 args: argparse.Namespace) -> None:
        self.result = Side(f"{label} (lean client)", server, "lean")
        address, _, prefix = base_url.removeprefix("http://").partition("/")
        host, port = address.rsplit(":", 1)
        self._address = (host, int(port))
        self._head = (
            f"POST /{prefix}/chat/completions HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {api_key}\r\n"
            "Content-Type: application/json\r\nAccept: application/json\r\nContent-Length: "
        )
        self._model = model
        self._eos_in_usage = eos_in_usage
        self._vary = args.vary
        self._counter = _Counter()
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self._fixed = None if args.vary else self._request(PROMPT)

    def _request(self, prompt: str) -> bytes:
        body = json.dumps({
            "model": self._model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0,
            "max_tokens": MAX_TOKENS,
            "stream": True,
            "stream_options": {"include_usage": True},
            "repeat_penalty": 1.0,
        }, separators=(",", ":")).encode()
        return f"{self._head}{len(body)}\r\n\r\n".encode() + body

    def _connection(self) -> tuple[_Connection, bool]:
        """An idle keep-alive connection (True) or, when none is left open, a new one (False)."""
        with self._lock:
            while self._idle:
                connection = self._idle.pop()
                if not connection.stale():
                    return connection, True
                connection.close()
        return _Connection(*self._address), False

    def stream(self) -> Stream:
        index = self._counter.next()
        request = self._fixed or self._request(prompt_for(index, self._vary))
        connection, reused = self._connection()
        try:
            try:
                result = self._exchange(connection, request)
            except ConnectionError:
                if not reused:
                    raise
                # closed by the server between our check and the request: once more on a new connection
                connection.close()
                connection = _Connection(*self._address)
                result = self._exchange(connection, request)
        except BaseException:
            connection.close()
            raise
        if connection.reusable:
            with self._lock:
                self._idle.append(connection)
        else:
            connection.close()
        return result

    def _exchange(self, connection: _Connection, request: bytes) -> Stream:
        started = time.perf_counter()
        connection.sock.sendall(request)
        while (end := connection.buffer.find(b"\r\n\r\n")) < 0:
            connection.buffer += connection.recv()
        head, connection.buffer = connection.buffer[:end], connection.buffer[end + 4 :]
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected response: {head[:300]!r}")
        if b"\r\nconnection: close" in head.lower():
            connection.reusable = False
        first = ended = None
        chunks = 0
        finish_reason = None
        usage = None
        pending = b""
        body = _body(connection, head)
        for piece in body:
            lines = (pending + piece).split(b"\n")
            pending = lines.pop()
            for line in lines:
                if not line.startswith(b"data: "):
                    continue  # blank separators, comments, event: fields
                if line.startswith(b"data: [DONE]"):
                    ended = time.perf_counter()
                    break
                if _has_content(line):
                    chunks += 1
                    if first is None:
                        first = time.perf_counter()
                finish_reason = _finish_reason(line) or finish_reason
                if b'"usage":{' in line or b'"usage": {' in line:
                    usage = json.loads(line[6:])["usage"]
            if ended is not None:
                break
        for _ in body:  # the rest of the response (the last chunk), off the clock
            pass
        if ended is None:
            raise RuntimeError("the stream ended without data: [DONE]")
        if first is None:
            raise RuntimeError("the stream had no content")
        tokens = usage["completion_tokens"] if usage is not None else chunks
        if usage is not None and self._eos_in_usage and finish_reason == "stop":
            tokens -= 1
        return Stream(first - started, tokens, ended - first, ended - started, started, ended, finish_reason)

    def concurrent(self, streams: int) -> list[Stream]:
        return run_concurrently(self.stream, streams)

    def close(self) -> None:
        with self._lock:
            for connection in self._idle:
                connection.close()
            self._idle.clear()


ServerSide = OpenAISide | LeanSide


def client_sides(server: str, label: str, base_url: str, api_key: str, model: str, eos_in_usage: bool,
                 args: argparse.Namespace) -> list[ServerSide]:
    """One side per client kind asked for (`--client`), all talking to the same server."""
    sides: list[ServerSide] = []
    if args.client in ("sdk", "both"):
        sides.append(OpenAISide(server, label, base_url, api_key, model, eos_in_usage, args))
    if args.client in ("lean", "both"):
        sides.append(LeanSide(server, label, base_url, api_key, model, eos_in_usage, args))
    return sides


def memory_summary(pid: int) -> str:
    rows = tree_memory(pid)
    rss = sum(r[1] for r in rows)
    pss = sum(r[2] for r in rows)
    parts = ", ".join(f"{name} {r} MiB" for name, r, _ in rows)
    return f"RSS {rss} MiB (PSS {pss} MiB): {parts}"


# --- our gateway -------------------------------------------------------------------------------------------


@contextmanager
def our_side(args: argparse.Namespace) -> Iterator[tuple[list[ServerSide], int]]:
    settings = {"models": args.models} if args.models else {}
    with running_stack(**settings) as stack:
        assert stack.process is not None
        sides = client_sides("ours", "ours", stack.base_url + "/v1", guest_token(stack), OUR_MODEL, True, args)
        try:
            yield sides, stack.process.pid
        finally:
            for side in sides:
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
        self.result = Side("llama-cpp-python in-process", "inprocess")
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
def peer_side(args: argparse.Namespace) -> Iterator[tuple[list[ServerSide], int]]:
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
        sides = client_sides("peer", "llama_cpp.server", base, "none", "smollm2", False, args)
        try:
            yield sides, process.pid
        finally:
            for side in sides:
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


def report(sides: list[Side], memories: dict[str, str], args: argparse.Namespace) -> None:
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
    for name, memory in memories.items():
        print(f"- {name}: {memory}")

    rows = []

    def ratio_row(label: str, mine: float, theirs: float, target: float) -> None:
        value = mine / theirs
        rows.append([label, f"{mine:.1f} / {theirs:.1f}", f"{value:.3f}x", f">= {target}x", verdict(value >= target)])

    def find(server: str, client: str) -> Side | None:
        return next((side for side in sides if side.server == server and side.client == client), None)

    inprocess = find("inprocess", "")
    for client, client_label in CLIENT_LABELS.items():
        ours = find("ours", client)
        if ours is None:
            continue
        ours_decode = median([x.decode_rate for x in ours.single])
        if inprocess:
            ratio_row(f"{client_label}: decode tok/s, ours / in-process (no client)", ours_decode,
                      median([x.decode_rate for x in inprocess.single]), TARGET_VS_INPROCESS)
        peer = find("peer", client)
        if peer:
            ratio_row(f"{client_label}: decode tok/s, ours / llama_cpp.server", ours_decode,
                      median([x.decode_rate for x in peer.single]), TARGET_VS_PEER_SINGLE)
            ours_e2e, peer_e2e = median([x.e2e_rate for x in ours.single]), median([x.e2e_rate for x in peer.single])
            rows.append([f"({client_label}: end-to-end tok/s, ours / llama_cpp.server)",
                         f"{ours_e2e:.1f} / {peer_e2e:.1f}", f"{ours_e2e / peer_e2e:.3f}x", "-", "-"])
            ratio_row(f"{client_label}: {args.streams}-stream aggregate tok/s, ours / llama_cpp.server",
                      median(ours.aggregate_rates()), median(peer.aggregate_rates()), TARGET_VS_PEER_CONCURRENT)
    if rows:
        print("\nTargets (medians; each ratio compares sides measured with the same client):\n")
        print_table(["figure", "ours / theirs", "ratio", "target", "result"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="single streams, and concurrent rounds, per side")
    parser.add_argument("--streams", type=int, default=4, help="concurrent streams per round")
    parser.add_argument("--vary", action="store_true", help="a different prompt every request (no prefix reuse)")
    parser.add_argument("--models", default="", help="JAN_MODELS for our stack (default: the built-in default)")
    parser.add_argument("--no-peer", action="store_true", help="skip llama_cpp.server")
    parser.add_argument("--no-inprocess", action="store_true", help="skip in-process llama-cpp-python")
    parser.add_argument("--client", choices=["sdk", "lean", "both"], default="both",
                        help="client for the two servers: the openai SDK, the lean raw-socket one, or both")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        inprocess_worker(args)
        return

    print(f"# bench.chat — {machine_line()}")
    print(f"prompt {PROMPT!r}{' (varied)' if args.vary else ''}, temperature 0, max_tokens {MAX_TOKENS}; "
          f"our models: {args.models or 'default settings'}")
    memories: dict[str, str] = {}
    with ExitStack() as servers:
        ours, ours_pid = servers.enter_context(our_side(args))
        time.sleep(2)  # let startup settle before reading memory
        idle = memory_summary(ours_pid)
        sides: list[ServerSide | InProcessSide] = list(ours)
        inprocess = None
        if not args.no_inprocess:
            inprocess = InProcessSide(args)
            servers.callback(inprocess.close)
            sides.append(inprocess)
        peer_pid = None
        if not args.no_peer:
            peer, peer_pid = servers.enter_context(peer_side(args))
            sides.extend(peer)
            time.sleep(1)
            peer_idle = memory_summary(peer_pid)
        for side in sides:
            for _ in range(WARMUP):
                side.stream()
        # Interleaved, with the order rotating, so drift on a shared box hits every side alike.
        for run in range(args.runs):
            for side in sides[run % len(sides):] + sides[: run % len(sides)]:
                side.result.single.append(side.stream())
        served = [side for side in sides if not isinstance(side, InProcessSide)]
        for run in range(args.runs):
            for side in served[run % len(served):] + served[: run % len(served)]:
                side.result.rounds.append(side.concurrent(args.streams))
        memories["ours"] = f"idle {idle}; after the bench {memory_summary(ours_pid)}"
        if peer_pid is not None:
            memories["llama_cpp.server"] = f"idle {peer_idle}; after the bench {memory_summary(peer_pid)}"
    if inprocess is not None:
        memories["llama-cpp-python in-process"] = inprocess.result.memory
    report([side.result for side in sides], memories, args)


if __name__ == "__main__":
    main()
