"""What the Responses API's orchestration costs besides the model and the tools, and a 3-step tool chain's wall time.

    .venv/bin/python -m bench.responses [--runs 20] [--chains 5]

One stack (the real LLM and MCP services over gRPC); the responses service runs in this process against it, on a
temporary SQLite database, with the same gRPC clients the server uses. The orchestrator records, per step, its
wall time, the time spent waiting for the model's stream (every `anext` on it: the gRPC call, llama.cpp, and the
SSE parsing of the chunks) and the time in the tool calls (the CallTool RPCs). Overhead = wall - model - tools:
building the chat request, the per-token item and event work (events are serialized as for a streaming client),
and the tool bookkeeping. Per response it also reports create's wall time minus all steps' model and tool time,
which adds the model check, the (cached) tool list, and the two database writes.

Request: "What is 1234 * 5678?" to SmolLM2 at temperature 0, python_exec offered and forced on the first step
(`tool_choice` named), so step 1 calls the tool and step 2 answers (max_output_tokens 200). llama.cpp models
answer in text once a tool result follows the user's message, so the 3-step chain forces python_exec on steps 1
and 2 (an orchestrator subclass) and leaves step 3 to the model (max_output_tokens 300).

Overheads are wall-clock: on 2 cores shared with llama.cpp's 2 threads, a step's few hundred microseconds of Python
sometimes wait for a core, hence p95 and max well above p50.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import tempfile
import time
from typing import Any, ClassVar

import grpc

from bench import guest_token, machine_line, percentile, print_table, running_stack
from server.auth.store import User
from server.core.db import create_engine, session_factory
from server.core.migrate import run_migrations
from server.responses.llm_client import LlmClient
from server.responses.mcp_client import McpClient
from server.responses.orchestrator import Orchestrator, Run, StepTiming
from server.responses.rpc_client import CallerMetadata
from server.responses.service import ResponseService
from tests.e2e.conftest import MODEL
from tests.e2e.test_responses_tools import QUESTION

WARMUP = 2
TARGET_OVERHEAD_MS = 5.0


class RecordingOrchestrator(Orchestrator):
    """Keeps each run's step timings."""

    runs: ClassVar[list[list[StepTiming]]] = []

    async def run(self, run: Run, messages: list[dict[str, Any]]) -> None:
        try:
            await super().run(run, messages)
        finally:
            RecordingOrchestrator.runs.append(run.timings)


def request(**fields: Any) -> bytes:
    return json.dumps({
        "model": MODEL, "input": QUESTION, "tools": ["python_exec"], "temperature": 0, "stream": True,
        "tool_choice": {"type": "function", "name": "python_exec"}, **fields,
    }).encode()


class ChainOrchestrator(RecordingOrchestrator):
    """Forces python_exec on steps 1 and 2 (SmolLM2 does not chain calls by itself), leaving step 3 to the model."""

    def _chat_body(self, run: Run, messages: list[dict[str, Any]], step: int) -> dict[str, Any] | None:
        body = super()._chat_body(run, messages, step)
        if body is not None and step < 2:
            body["tool_choice"] = {"type": "function", "function": {"name": "python_exec"}}
        return body


async def one(service: ResponseService, caller: CallerMetadata, body: bytes) -> tuple[float, list[StepTiming],
                                                                                      dict[str, Any]]:
    started = time.perf_counter()
    created = await service.create(caller, body)
    assert created.events is not None
    last = b""
    async for event in created.events:
        last = event
    wall = time.perf_counter() - started
    response = json.loads(last.split(b"data: ", 1)[1])["response"]
    return wall, RecordingOrchestrator.runs[-1], response


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


async def measure(stack: Any, user_id: str, runs: int, chains: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite+aiosqlite:///{folder}/bench.db"
        await run_migrations(url)
        engine = create_engine(url)
        sessions = session_factory(engine)
        async with sessions.begin() as session:
            session.add(User(id=user_id, username="bench", is_guest=True))
        channel = grpc.aio.insecure_channel(stack.grpc_target)
        llm, mcp = LlmClient(channel), McpClient(channel, 45.0)
        caller = CallerMetadata(user_id, "jwt", "req_bench")

        def service(max_steps: int, orchestrator: type[Orchestrator]) -> ResponseService:
            return ResponseService(sessions, llm, mcp, public_url=stack.base_url, max_steps=max_steps,
                                   history_items=200, orchestrator=orchestrator)

        two_steps, three_steps = service(2, RecordingOrchestrator), service(3, ChainOrchestrator)
        body = request(max_output_tokens=200)
        for _ in range(WARMUP):
            await one(two_steps, caller, body)
        steps: list[StepTiming] = []
        per_response: list[float] = []
        statuses: list[str] = []
        for _ in range(runs):
            wall, timings, response = await one(two_steps, caller, body)
            statuses.append(" → ".join(f"{item['type']} ({item['status']})" for item in response["output"]))
            steps += timings
            per_response.append(wall - sum(t.model + t.tools for t in timings))
        overheads = [t.overhead for t in steps]
        print(f"\nPer step: {len(steps)} steps of {runs} responses (≤ 2 steps each), milliseconds\n")
        print_table(
            ["what", "p50", "p95", "max"],
            [[name, ms(percentile(xs, 0.5)), ms(percentile(xs, 0.95)), ms(max(xs, default=float("nan")))]
             for name, xs in (
                ("orchestration overhead per step", overheads),
                ("model (waiting on the chat stream)", [t.model for t in steps]),
                ("tools (CallTool RPCs, steps that ran one)", [t.tools for t in steps if t.tool_calls]),
                ("whole response minus model and tools", per_response),
            )],
        )
        print("\nOutputs: " + "; ".join(f"{statuses.count(s)} x {s or 'none'}" for s in sorted(set(statuses))))
        p50 = percentile(overheads, 0.5) * 1000
        print(f"\nTarget: overhead per step p50 < {TARGET_OVERHEAD_MS} ms: {p50:.2f} ms "
              f"({'met' if p50 < TARGET_OVERHEAD_MS else 'NOT met'})")

        rows = []
        for number in range(chains):
            body = request(max_output_tokens=300)
            wall, timings, response = await one(three_steps, caller, body)
            kinds = " → ".join(f"{item['type']} ({item['status']})" for item in response["output"])
            errors = [item["error"] for item in response["output"] if item.get("error")]
            if errors:
                print(f"chain {number + 1}: tool errors: {errors}")
            rows.append([number + 1, len(timings), f"{wall:.2f}", f"{sum(t.model for t in timings):.2f}",
                         f"{sum(t.tools for t in timings):.3f}", ms(sum(t.overhead for t in timings)),
                         response["status"], kinds])
        print("\n3-step tool chain (python_exec forced on steps 1-2, step 3 auto), seconds\n")
        print_table(["run", "steps", "wall", "model", "tools", "overhead ms", "status", "output"], rows)
        await channel.close()
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="2-step responses for the per-step overhead")
    parser.add_argument("--chains", type=int, default=5, help="3-step chains to time")
    args = parser.parse_args()
    print(machine_line())
    with running_stack() as stack:
        token = guest_token(stack)
        user_id = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "==="))["sub"]
        asyncio.run(measure(stack, user_id, args.runs, args.chains))


if __name__ == "__main__":
    main()
