"""Prometheus `/metrics` of a running stack: the counters move with what clients did through Envoy, Envoy's own
stats answer on its admin port, and every metric the Grafana dashboard queries exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import MODEL, mcp_rpc
from tests.support.stack import ROOT, Stack

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "jan-server.json"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(stack: Stack) -> str:
    response = httpx.get(f"http://127.0.0.1:{stack.env['JAN_METRICS_PORT']}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return response.text


def samples(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(parsed: Samples, name: str, **labels: str) -> float:
    return parsed.get((name, frozenset(labels.items())), 0.0)


def test_counters_move_with_chat_tool_calls_and_errors(
    stack: Stack, client: openai.OpenAI, http: httpx.Client, auth_headers: dict[str, str]
) -> None:
    before = samples(scrape(stack))
    answer = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hi"}], max_tokens=8
    )
    assert answer.usage is not None
    # Read to the end of the HTTP response (the SDK may hang up at [DONE], before the RPC ends: a 499).
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Count to three"}], "max_tokens": 8,
            "stream": True, "stream_options": {"include_usage": True}}
    with http.stream("POST", "/v1/chat/completions", json=body, headers=auth_headers) as stream:
        events = [line.removeprefix("data: ") for line in stream.iter_lines() if line.startswith("data: {")]
    [usage] = [event["usage"] for event in map(json.loads, events) if event.get("usage")]
    prompt_tokens = answer.usage.prompt_tokens + usage["prompt_tokens"]
    completion_tokens = answer.usage.completion_tokens + usage["completion_tokens"]
    bad = http.post("/v1/chat/completions", json={"model": MODEL}, headers=auth_headers)
    assert bad.status_code == 400
    missing = http.get("/v1/conversations/conv_0000000000000000", headers=auth_headers)
    assert missing.status_code == 404
    result = mcp_rpc(stack, "tools/call", {"name": "file_search_query", "arguments": {"query": "metrics"}})
    assert result["isError"] is False

    after = samples(scrape(stack))

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("jan_chat_prompt_tokens_total", model=MODEL) == prompt_tokens
    assert moved("jan_chat_completion_tokens_total", model=MODEL) == completion_tokens
    # Both answers had a first delta; each lands in the +Inf bucket and in some finite one.
    assert moved("jan_chat_time_to_first_token_seconds_bucket", model=MODEL, le="+Inf") == 2
    assert moved("jan_chat_time_to_first_token_seconds_count", model=MODEL) == 2
    assert moved("jan_chat_inter_token_latency_seconds_count", model=MODEL) >= 1
    chat = {"service": "jan.llm.v1.LlmService", "method": "CreateChatCompletion"}
    assert moved("jan_rpc_requests_total", **chat, status="200") == 2
    assert moved("jan_rpc_requests_total", **chat, status="400") == 1
    get_conversation = {"service": "jan.llm.v1.ConversationService", "method": "GetConversation"}
    assert moved("jan_rpc_requests_total", **get_conversation, status="404") == 1
    assert moved("jan_rpc_duration_seconds_count", **chat) == 3
    assert moved("jan_tool_calls_total", tool="file_search_query", outcome="ok") == 1
    database = "sqlite" if "sqlite" in stack.env["JAN_DATABASE_URL"] else "postgresql"
    assert value(after, "jan_db_pool_size", database=database) >= 1
    assert ("jan_model_queue_depth", frozenset({("model", MODEL)})) in after
    assert value(after, "process_resident_memory_bytes") > 0


def test_envoy_stats_answer_on_its_admin_port(stack: Stack) -> None:
    response = httpx.get(f"http://127.0.0.1:{stack.env['JAN_ENVOY_ADMIN_PORT']}/stats/prometheus", timeout=10)
    assert response.status_code == 200
    assert "envoy_cluster_upstream_rq_total" in response.text


def _queried_metrics(dashboard: dict[str, object]) -> set[str]:
    exprs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                exprs.append(node["expr"])
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(dashboard)
    # Metric names only: not the label names in matchers and `by (...)` clauses.
    bare = [re.sub(r"\{[^}]*\}|\bby \([^)]*\)", "", expr) for expr in exprs]
    return {name for expr in bare for name in re.findall(r"\b(?:jan|envoy|process)_[a-z0-9_]+", expr)}


def test_every_metric_the_dashboard_queries_exists(stack: Stack, client: openai.OpenAI) -> None:
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    mcp_rpc(stack, "tools/call", {"name": "file_search_query", "arguments": {"query": "dashboard"}})
    dashboard = json.loads(Path(DASHBOARD).read_text())
    assert dashboard["uid"] and dashboard["panels"]
    queried = _queried_metrics(dashboard)
    assert {"jan_rpc_requests_total", "jan_chat_time_to_first_token_seconds_bucket"} <= queried
    envoy = httpx.get(f"http://127.0.0.1:{stack.env['JAN_ENVOY_ADMIN_PORT']}/stats/prometheus", timeout=10).text
    # Declared families: a labelled metric nothing has touched yet (no rejection so far) has no sample, only a TYPE.
    declared = set(re.findall(r"^# TYPE (\S+) ", scrape(stack) + envoy, re.MULTILINE))
    missing = {
        name for name in queried if name not in declared and re.sub(r"_(bucket|count|sum)$", "", name) not in declared
    }
    assert missing == set()
