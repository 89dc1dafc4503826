"""Embeddings with all-MiniLM-L6-v2 (numpy, no torch): texts per second for short (~12 tokens) and long (~130
tokens) texts, and the latency of one text, in-process and through `POST /v1/embeddings`.

    .venv/bin/python -m bench.embeddings [--short 512] [--long 128] [--batch 32] [--single 100] [--threads N]
                                         [--no-chat]

In-process: `MiniLMEmbedder.embed` in this process, `--batch` texts per call (the embedder's own batch is 32).
Through the API: the whole stack (Envoy, JWT), one keep-alive HTTP/1.1 connection, `--batch` texts per request,
float and base64 answers (the openai SDK asks for base64); the client's JSON parse is inside the clock. One text:
p50 over `--single` calls with a 5-word sentence. Sides run one after the other, never at once. Texts are all
different, so nothing can be cached.

Then (unless `--no-chat`) the 2-core question: the chat model and the embedder share the cores. Long-text
embeddings/s while a chat completion generates, and the chat's tokens/s alone and while embeddings run.
`--threads` sets numpy's BLAS threads on both sides (`JAN_EMBEDDING_THREADS` for the stack); default: every CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import threading
import time
from collections.abc import Callable

from bench import guest_token, machine_line, median, print_table, running_stack
from server.core.config import usable_cpus
from server.llm.embeddings import MiniLMEmbedder, bundled_minilm_path
from tests.support.stack import Stack

MODEL = "all-minilm-l6-v2"
CHAT_MODEL = "smollm2-135m-instruct"
SUBJECTS = ["order", "invoice", "parcel", "ticket", "report", "request", "shipment", "booking"]


def short_texts(count: int) -> list[str]:
    """About 12 tokens each, [CLS] and [SEP] included."""
    return [f"The {SUBJECTS[i % 8]} number {i} reached the warehouse on time." for i in range(count)]


def long_texts(count: int) -> list[str]:
    """About 130 tokens each."""
    paragraph = (
        "The {s} number {i} was reviewed by the operations team on Monday morning. They checked the delivery "
        "address, the weight, the customs forms and the insurance value against the records kept by the "
        "warehouse, and found two small differences that had to be corrected by hand. The customer was told "
        "by email, and asked to confirm the new details before Friday, so that the carrier could collect the "
        "goods as planned. Everyone agreed that the process should be simpler next quarter, and a short list "
        "of changes was sent to the managers for approval."
    )
    return [paragraph.format(s=SUBJECTS[i % 8], i=i) for i in range(count)]


def _rate(texts: list[str], batch: int, embed: Callable[[list[str]], None]) -> float:
    embed(texts[:batch])  # warm-up
    started = time.perf_counter()
    for start in range(0, len(texts), batch):
        embed(texts[start : start + batch])
    return len(texts) / (time.perf_counter() - started)


def _single_ms(count: int, embed: Callable[[list[str]], None]) -> float:
    samples = []
    for i in range(count):
        started = time.perf_counter()
        embed([f"where is my parcel {i}"])
        samples.append((time.perf_counter() - started) * 1000)
    return median(samples)


def in_process(args: argparse.Namespace) -> list[object]:
    async def run() -> list[object]:
        embedder = MiniLMEmbedder(MODEL, bundled_minilm_path(), threads=args.threads)
        started = time.perf_counter()
        await embedder.start()
        load_s = time.perf_counter() - started
        loop = asyncio.get_running_loop()

        def embed(texts: list[str]) -> None:
            # The bench's own thread blocks on the embedder's worker thread, as a request handler would await it.
            asyncio.run_coroutine_threadsafe(embedder.embed(texts), loop).result()

        def measure() -> list[object]:
            return [
                f"{_rate(short_texts(args.short), args.batch, embed):.0f}",
                f"{_rate(long_texts(args.long), args.batch, embed):.1f}",
                f"{_single_ms(args.single, embed):.2f}",
            ]

        row = await asyncio.to_thread(measure)
        await embedder.close()
        return ["in-process", *row, f"load {load_s:.2f} s"]

    return asyncio.run(run())


class Api:
    def __init__(self, stack: Stack, token: str, encoding_format: str = "float") -> None:
        self._connection = http.client.HTTPConnection(stack.base_url.removeprefix("http://"), timeout=600)
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.encoding_format = encoding_format

    def embed(self, texts: list[str]) -> None:
        body = json.dumps({"model": MODEL, "input": texts, "encoding_format": self.encoding_format}).encode()
        self._connection.request("POST", "/v1/embeddings", body=body, headers=self._headers)
        response = self._connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"embeddings: {response.status} {data[:300]!r}")
        if len(json.loads(data)["data"]) != len(texts):
            raise RuntimeError("wrong number of embeddings")

    def chat(self, max_tokens: int) -> tuple[int, float]:
        """(completion tokens, seconds) of one non-streamed chat completion."""
        body = json.dumps({"model": CHAT_MODEL, "max_tokens": max_tokens, "temperature": 0,
                           "messages": [{"role": "user", "content": "Write a long story about a lighthouse."}]})
        started = time.perf_counter()
        self._connection.request("POST", "/v1/chat/completions", body=body.encode(), headers=self._headers)
        response = self._connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"chat: {response.status} {data[:300]!r}")
        return json.loads(data)["usage"]["completion_tokens"], time.perf_counter() - started

    def close(self) -> None:
        self._connection.close()


def through_api(stack: Stack, args: argparse.Namespace) -> list[list[object]]:
    rows: list[list[object]] = []
    for encoding_format in ("float", "base64"):
        api = Api(stack, guest_token(stack), encoding_format)
        rows.append([
            f"API ({encoding_format})",
            f"{_rate(short_texts(args.short), args.batch, api.embed):.0f}",
            f"{_rate(long_texts(args.long), args.batch, api.embed):.1f}",
            f"{_single_ms(args.single, api.embed):.2f}",
            "Envoy, JWT, keep-alive",
        ])
        api.close()
    return rows


def sharing_with_chat(stack: Stack, args: argparse.Namespace) -> list[list[object]]:
    """Long-text embeddings/s and chat tokens/s, each alone and while the other runs."""
    token = guest_token(stack)
    chat, embedder = Api(stack, token), Api(stack, token)
    texts = long_texts(args.long)
    chat.chat(8)  # warm-up
    tokens, seconds = chat.chat(args.chat_tokens)
    chat_alone = tokens / seconds
    embeddings_alone = _rate(texts, args.batch, embedder.embed)

    stop = threading.Event()
    chat_rates: list[float] = []

    def chat_loop() -> None:
        while not stop.is_set():
            tokens, seconds = chat.chat(args.chat_tokens)
            chat_rates.append(tokens / seconds)

    chatting = threading.Thread(target=chat_loop)
    chatting.start()
    time.sleep(0.5)
    embeddings_shared = _rate(texts, args.batch, embedder.embed)
    stop.set()
    chatting.join()
    chat.close()
    embedder.close()
    return [
        ["long embeddings/s (API)", f"{embeddings_alone:.1f}", f"{embeddings_shared:.1f}"],
        ["chat tokens/s", f"{chat_alone:.1f}", f"{median(chat_rates):.1f}"],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", type=int, default=512, help="short texts per measurement")
    parser.add_argument("--long", type=int, default=128, help="long texts per measurement")
    parser.add_argument("--batch", type=int, default=32, help="texts per call / request")
    parser.add_argument("--single", type=int, default=100, help="one-text calls for the latency p50")
    parser.add_argument("--chat-tokens", type=int, default=128, help="max_tokens of each chat in the sharing test")
    parser.add_argument("--threads", type=int, default=usable_cpus(), help="numpy BLAS threads of the embedder")
    parser.add_argument("--no-chat", action="store_true", help="skip the test of sharing the cores with chat")
    args = parser.parse_args()
    print(machine_line(), f"- embedder BLAS threads: {args.threads}")
    rows: list[list[object]] = [in_process(args)]
    with running_stack(embedding_threads=str(args.threads)) as stack:
        rows.extend(through_api(stack, args))
        sharing = None if args.no_chat else sharing_with_chat(stack, args)
    print()
    print_table(["side", "short texts/s", "long texts/s", "1 text p50 ms", "note"], rows)
    if sharing:
        print()
        print_table(["measure", "alone", "while the other runs"], sharing)


if __name__ == "__main__":
    main()
