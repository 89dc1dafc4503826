"""Conversation storage at scale, on PostgreSQL: list and append latency with 10k conversations per user and 10k
items per conversation, against a user with 10 of each in the same run (the baseline).

    .venv/bin/python -m bench.conversations [--rows 10000] [--requests 300]

Starts its own PostgreSQL (tests/support/postgres.py) and the whole stack, seeds rows straight into the tables
(the API would take minutes for 20k writes), then measures through Envoy with one keep-alive HTTP/1.1 connection
per path, interleaved in blocks. Target: list p50 under 10 ms at 10k rows.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert

from bench import guest_token, machine_line, median, percentile, print_table, running_stack, verdict
from server.core.db import create_engine, utcnow
from server.core.ids import new_id
from server.llm.conversations.store import Conversation, ConversationItem
from tests.support.postgres import PostgresServer
from tests.support.stack import Stack

LIST_TARGET_MS = 10.0
BLOCK = 50


@dataclass
class Account:
    label: str
    token: str
    conversation_id: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)


def _request(connection: http.client.HTTPConnection, method: str, path: str, token: str,
             body: dict[str, Any] | None = None) -> tuple[float, dict[str, Any]]:
    payload = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    started = time.perf_counter()
    connection.request(method, path, body=payload, headers=headers)
    response = connection.getresponse()
    data = response.read()
    elapsed = (time.perf_counter() - started) * 1000
    if response.status != 200:
        raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
    return elapsed, json.loads(data)


def _user_id(stack: Stack, token: str) -> str:
    connection = http.client.HTTPConnection(stack.base_url.removeprefix("http://"), timeout=30)
    try:
        return str(_request(connection, "GET", "/auth/me", token)[1]["id"])
    finally:
        connection.close()


async def _seed(database_url: str, user_id: str, rows: int) -> str:
    """`rows` conversations for the user, the newest of which holds `rows` items; returns that conversation's id."""
    engine = create_engine(database_url)
    now = utcnow()
    try:
        async with engine.begin() as connection:
            conversations = [
                {"id": new_id("conv"), "user_id": user_id, "title": f"conversation {n}", "metadata": {},
                 "created_at": now, "updated_at": now}
                for n in range(rows)
            ]
            await connection.execute(insert(Conversation.__table__), conversations)
            target = conversations[-1]["id"]
            target_pk = (await connection.execute(
                Conversation.__table__.select().with_only_columns(Conversation.pk).where(Conversation.id == target)
            )).scalar_one()
            items = [
                {"id": new_id("msg"), "conversation_pk": target_pk, "type": "message", "status": "completed",
                 "role": "user" if n % 2 == 0 else "assistant", "created_at": now,
                 "content": [{"type": "input_text" if n % 2 == 0 else "output_text", "text": f"message {n} " * 20}]}
                for n in range(rows)
            ]
            for start in range(0, rows, 2000):
                await connection.execute(insert(ConversationItem.__table__), items[start : start + 2000])
    finally:
        await engine.dispose()
    return str(target)


def _paths(account: Account) -> dict[str, tuple[str, str, dict[str, Any] | None]]:
    conversation = account.conversation_id
    item = {"items": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]}
    return {
        "list conversations (limit 20)": ("GET", "/v1/conversations?limit=20", None),
        "list items (limit 20)": ("GET", f"/v1/conversations/{conversation}/items?limit=20", None),
        "append 1 item": ("POST", f"/v1/conversations/{conversation}/items", item),
    }


def measure(stack: Stack, accounts: list[Account], requests: int) -> None:
    connections = {a.label: http.client.HTTPConnection(stack.base_url.removeprefix("http://"), timeout=30)
                   for a in accounts}
    try:
        for _ in range(20):  # warm-up: connections, JWT cache, query plans
            for account in accounts:
                for method, path, body in _paths(account).values():
                    _request(connections[account.label], method, path, account.token, body)
        for _ in range(0, requests, BLOCK):
            for account in accounts:
                for name, (method, path, body) in _paths(account).items():
                    for _ in range(BLOCK):
                        elapsed, _ = _request(connections[account.label], method, path, account.token, body)
                        account.samples.setdefault(name, []).append(elapsed)
    finally:
        for connection in connections.values():
            connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000, help="conversations per user and items per conversation")
    parser.add_argument("--requests", type=int, default=300, help="measured requests per path and account")
    args = parser.parse_args()
    print(machine_line())
    postgres = PostgresServer()
    postgres.start()
    try:
        database_url = postgres.create_database("jan_bench")
        with running_stack(database_url=database_url) as stack:
            accounts = [Account("baseline (10 rows)", guest_token(stack)),
                        Account(f"{args.rows:,} rows", guest_token(stack))]
            for account, rows in zip(accounts, (10, args.rows), strict=True):
                started = time.perf_counter()
                account.conversation_id = asyncio.run(_seed(database_url, _user_id(stack, account.token), rows))
                print(f"seeded {account.label} in {time.perf_counter() - started:.1f} s")
            measure(stack, accounts, args.requests)
    finally:
        postgres.stop()

    baseline, large = accounts
    rows_out = []
    for name in baseline.samples:
        small, big = baseline.samples[name], large.samples[name]
        rows_out.append([name, f"{median(small):.2f}", f"{median(big):.2f}", f"{percentile(big, 0.95):.2f}",
                         f"{median(big) / median(small):.2f}x"])
    print()
    print_table(["path (through Envoy)", "p50 ms, 10 rows", f"p50 ms, {args.rows:,} rows",
                 f"p95 ms, {args.rows:,} rows", "ratio"], rows_out)
    list_p50 = median(large.samples["list conversations (limit 20)"])
    print(f"\nlist p50 at {args.rows:,} conversations: {list_p50:.2f} ms (target < {LIST_TARGET_MS:.0f} ms): "
          f"{verdict(list_p50 < LIST_TARGET_MS)}")


if __name__ == "__main__":
    main()
