"""`file_search_query` latency with 10,000 chunks for one user, against a user with 100 chunks in the same run, on
SQLite (sqlite-vec) and on PostgreSQL without pgvector (the exact numpy store).

    .venv/bin/python -m bench.file_search [--chunks 10000] [--requests 200] [--pgvector-bin DIR]

`--pgvector-bin` adds a third run on a PostgreSQL whose binaries in DIR have the pgvector extension (e.g. the
`pginstall/bin` folder of the `pgserver` wheel, PostgreSQL 16.2 + pgvector 0.6.2), where the server picks pgvector.

For each database: starts the whole stack (and PostgreSQL from tests/support/postgres.py), seeds both users through
the same VectorStore the server uses (documents of 10 chunks, random unit vectors: embedding 10k real passages
would take ~15 minutes and does not change a brute-force scan's cost), then calls `file_search_query` (top_k 5)
through Envoy's `POST /v1/mcp` (JWT, stateless `tools/call`, one keep-alive connection per user, interleaved
blocks). The figure includes embedding the query with all-MiniLM-L6-v2; the in-process column is
`VectorStore.search` alone (no HTTP, no embedding) on the same data.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import tests.support.postgres as test_postgres
from bench import guest_token, machine_line, median, percentile, print_table, running_stack
from server.core.db import create_engine, session_factory
from server.mcp.tools.file_search.selection import open_vector_store
from server.mcp.tools.file_search.vector_store import DIMENSIONS, VectorStore
from tests.support.stack import Stack

CHUNKS_PER_DOCUMENT = 10
BLOCK = 20
QUERIES = [
    "How do central banks fight inflation?",
    "Which telescope observes infrared light?",
    "Tips for growing tomatoes in a small garden",
    "What is the best way to bake sourdough bread?",
]


@dataclass
class Account:
    label: str
    token: str
    chunks: int
    user_id: str = ""
    http_ms: list[float] = field(default_factory=list)
    store_ms: list[float] = field(default_factory=list)


def _post(connection: http.client.HTTPConnection, token: str, body: dict[str, object]) -> tuple[float, dict]:  # type: ignore[type-arg]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
               "Accept": "application/json, text/event-stream"}
    started = time.perf_counter()
    connection.request("POST", "/v1/mcp", body=json.dumps(body).encode(), headers=headers)
    response = connection.getresponse()
    data = response.read()
    elapsed = (time.perf_counter() - started) * 1000
    if response.status != 200:
        raise RuntimeError(f"POST /v1/mcp: {response.status} {data[:300]!r}")
    return elapsed, json.loads(data)


def _query(connection: http.client.HTTPConnection, account: Account, text: str) -> float:
    elapsed, message = _post(connection, account.token, {
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "file_search_query", "arguments": {"query": text, "top_k": 5}},
    })
    result = message.get("result") or {}
    if result.get("isError") or result["structuredContent"]["count"] != 5:
        raise RuntimeError(f"unexpected answer: {message}")
    return elapsed


def _user_id(stack: Stack, token: str) -> str:
    connection = http.client.HTTPConnection(stack.base_url.removeprefix("http://"), timeout=30)
    try:
        connection.request("GET", "/auth/me", headers={"Authorization": f"Bearer {token}"})
        return str(json.loads(connection.getresponse().read())["id"])
    finally:
        connection.close()


async def _seed(store: VectorStore, user_id: str, chunks: int, rng: np.random.Generator) -> None:
    for document in range(chunks // CHUNKS_PER_DOCUMENT):
        vectors = rng.standard_normal((CHUNKS_PER_DOCUMENT, DIMENSIONS)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        texts = [f"Document {document}, passage {i}: " + "lorem ipsum dolor sit amet " * 12
                 for i in range(CHUNKS_PER_DOCUMENT)]
        await store.replace_document(user_id, f"doc-{document}", metadata={"n": document}, tags=["bench"],
                                     token_count=CHUNKS_PER_DOCUMENT * 100, chunks=texts, embeddings=vectors)


async def _seed_and_time_store(database_url: str, accounts: list[Account], requests: int) -> str:
    """Seeds every account, then times VectorStore.search in this process; returns the store's name."""
    engine = create_engine(database_url)
    try:
        store = await open_vector_store("auto", session_factory(engine))
        rng = np.random.default_rng(7)
        for account in accounts:
            started = time.perf_counter()
            await _seed(store, account.user_id, account.chunks, rng)
            print(f"  seeded {account.label} in {time.perf_counter() - started:.1f} s")
        queries = rng.standard_normal((len(QUERIES), DIMENSIONS)).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        for n in range(requests + 10):
            for account in accounts:
                started = time.perf_counter()
                found = await store.search(account.user_id, queries[n % len(queries)], 5, None)
                if n >= 10:  # the first ones warm caches
                    account.store_ms.append((time.perf_counter() - started) * 1000)
                assert len(found) == 5
        return store.name
    finally:
        await engine.dispose()


def _measure_http(stack: Stack, accounts: list[Account], requests: int) -> None:
    connections = {a.label: http.client.HTTPConnection(stack.base_url.removeprefix("http://"), timeout=60)
                   for a in accounts}
    try:
        for n in range(10):  # warm-up: connections, JWT cache, the store's first use
            for account in accounts:
                _query(connections[account.label], account, QUERIES[n % len(QUERIES)])
        for start in range(0, requests, BLOCK):
            for account in accounts:
                for n in range(start, min(start + BLOCK, requests)):
                    account.http_ms.append(_query(connections[account.label], account, QUERIES[n % len(QUERIES)]))
    finally:
        for connection in connections.values():
            connection.close()


def run(database: str, database_url: str, chunks: int, requests: int) -> list[list[str]]:
    print(f"{database}:")
    with running_stack(database_url=database_url) as stack:
        accounts = [Account("100 chunks", guest_token(stack), 100),
                    Account(f"{chunks:,} chunks", guest_token(stack), chunks)]
        for account in accounts:
            account.user_id = _user_id(stack, account.token)
        store_name = asyncio.run(_seed_and_time_store(database_url, accounts, requests))
        _measure_http(stack, accounts, requests)
    rows = []
    for account in accounts:
        rows.append([f"{database} ({store_name})", account.label, f"{median(account.http_ms):.2f}",
                     f"{percentile(account.http_ms, 0.95):.2f}", f"{median(account.store_ms):.2f}"])
    return rows


def _run_on_postgres(label: str, chunks: int, requests: int) -> list[list[str]]:
    postgres = test_postgres.PostgresServer()
    postgres.start()
    try:
        return run(label, postgres.create_database("jan_bench_fs"), chunks, requests)
    finally:
        postgres.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=10_000, help="chunks of the large user")
    parser.add_argument("--requests", type=int, default=200, help="measured queries per user and database")
    parser.add_argument("--pgvector-bin", default="", help="folder of PostgreSQL binaries that have pgvector")
    args = parser.parse_args()
    print(machine_line())
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="jan-bench-fs-") as folder:
        rows += run("SQLite", f"sqlite+aiosqlite:///{Path(folder) / 'jan.db'}", args.chunks, args.requests)
    rows += _run_on_postgres("PostgreSQL", args.chunks, args.requests)
    if args.pgvector_bin:
        # The suite's launcher looks for the system's PostgreSQL; point it at the other installation.
        test_postgres._bin = lambda name: str(Path(args.pgvector_bin) / name)
        rows += _run_on_postgres("PostgreSQL + pgvector", args.chunks, args.requests)
    print()
    print_table(["database (store)", "user", "p50 ms via /v1/mcp", "p95 ms via /v1/mcp", "p50 ms store.search"],
                rows)


if __name__ == "__main__":
    main()
