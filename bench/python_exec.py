"""What python_exec's sandbox costs: the round trip of `print(1)` against a bare `python -I -c 'print(1)'`.

    .venv/bin/python -m bench.python_exec [--runs 60]

Three sides, measured in the same run, interleaved (one call of each side per round, the order rotating):
- bare: `python -I -c 'print(1)'` as an asyncio subprocess with its stdout read (the floor: starting Python);
- tool: `PythonExecTool.call` in this process (temp dir, bubblewrap namespaces and mounts, setpriv, prlimit,
  Python, output read, artifacts listed, dir removed);
- MCP: `tools/call` through `POST /v1/mcp` on the whole stack (Envoy, JWT, the MCP endpoint, the same tool), one
  keep-alive HTTP/1.1 connection, the reply's JSON parsed inside the clock.
All three run the same interpreter (this one). 3 warm-up calls per side.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench import guest_token, machine_line, percentile, print_table, running_stack
from server.core.config import Settings
from server.mcp.tools.base import ToolContext
from server.mcp.tools.python_exec import PythonExecTool
from tests.support.stack import Stack

CODE = "print(1)"
WARMUP = 3


async def bare() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-c", CODE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, _ = await process.communicate()
    assert stdout == b"1\n"


def in_process(tool: PythonExecTool) -> Callable[[], Awaitable[None]]:
    context = ToolContext(user_id="bench", request_id="bench")

    async def call() -> None:
        result = await tool.call(context, {"code": CODE})
        assert result["stdout"] == "1\n", result

    return call


def through_mcp(stack: Stack) -> Callable[[], Awaitable[None]]:
    host, port = stack.base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "python_exec", "arguments": {"code": CODE}},
        }
    ).encode()
    headers = {
        "Authorization": f"Bearer {guest_token(stack)}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
    }

    def call_sync() -> None:
        connection.request("POST", "/v1/mcp", body=body, headers=headers)
        response = connection.getresponse()
        reply = json.loads(response.read())
        assert reply["result"]["structuredContent"]["stdout"] == "1\n", reply

    async def call() -> None:
        call_sync()  # blocking on purpose: nothing else runs in this process meanwhile

    return call


async def measure(sides: dict[str, Callable[[], Awaitable[None]]], runs: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in sides}
    for call in sides.values():
        for _ in range(WARMUP):
            await call()
    names = list(sides)
    for round_index in range(runs):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            await sides[name]()
            samples[name].append((time.perf_counter() - started) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()
    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="bench-pyexec-") as data_dir, running_stack() as stack:
        tool = PythonExecTool(Settings(data_dir=Path(data_dir)))
        if (reason := tool.unavailable_reason()) is not None:
            raise SystemExit(f"python_exec is unavailable here: {reason}")
        sides = {"bare python -c": bare, "tool in-process": in_process(tool), "POST /v1/mcp": through_mcp(stack)}
        samples = asyncio.run(measure(sides, args.runs))
    rows = [
        [name, f"{percentile(s, 0.5):.1f}", f"{percentile(s, 0.9):.1f}", f"{percentile(s, 0.99):.1f}", len(s)]
        for name, s in samples.items()
    ]
    print_table(["side", "p50 ms", "p90 ms", "p99 ms", "n"], rows)
    p50 = {name: percentile(s, 0.5) for name, s in samples.items()}
    print(f"\nsandbox overhead (tool - bare, p50): {p50['tool in-process'] - p50['bare python -c']:+.1f} ms")
    print(f"transport overhead (MCP - tool, p50): {p50['POST /v1/mcp'] - p50['tool in-process']:+.1f} ms")


if __name__ == "__main__":
    main()
