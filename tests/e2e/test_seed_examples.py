"""The user's API reference (shared/seed) examples, run as written: only the host, model id and token placeholders
are replaced."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from tests.e2e.conftest import MODEL, guest_login
from tests.support.stack import Stack

NODE_DIR = Path(__file__).parent / "node"

GUEST_LOGIN = "curl -X POST http://localhost:8000/llm/auth/guest-login"

USE_TOKEN = """curl -H "Authorization: Bearer <access_token>" \\
  http://localhost:8000/v1/models"""

API_KEY = """curl -H "X-API-Key: sk_your_api_key_here" \\
  http://localhost:8000/v1/chat/completions"""

REFRESH = """curl -X POST http://localhost:8000/llm/auth/refresh \\
  -H "Content-Type: application/json" \\
  -d '{"refresh_token": "your-refresh-token"}'"""

QUICK_START = """TOKEN=$(curl -X POST http://localhost:8000/llm/auth/guest-login | jq -r '.access_token')

curl -X POST http://localhost:8000/v1/chat/completions \\
  -H "Authorization: Bearer $TOKEN" \\
  -H "Content-Type: application/json" \\
  -d '{
    "model": "qwen2.5-0.5b-instruct",
    "messages": [
      {"role": "user", "content": "Hello!"}
    ]
  }'

curl -H "Authorization: Bearer $TOKEN" \\
  http://localhost:8000/v1/models"""

STREAMING = """curl -X POST https://api.Jan.ai/v1/chat/completions \\
  -H "Authorization: Bearer YOUR_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{
    "model": "gpt-4",
    "messages": [{"role": "user", "content": "Hello"}],
    "stream": true
  }'"""

PYTHON_SDK = """from openai import OpenAI

client = OpenAI(
    base_url="http://localhost:8000/v1",
    api_key="your-token"
)

response = client.chat.completions.create(
    model="qwen2.5-0.5b-instruct",
    messages=[{"role": "user", "content": "Hello!"}]
)
print(response.choices[0].message.content)
"""

NODE_SDK = """import OpenAI from 'openai';

const client = new OpenAI({
  baseURL: 'http://localhost:8000/v1',
  apiKey: 'your-token'
});

const response = await client.chat.completions.create({
  model: 'qwen2.5-0.5b-instruct',
  messages: [{ role: 'user', content: 'Hello!' }]
});
console.log(JSON.stringify(response));
"""

MCP_TOOLS = """curl -X POST http://localhost:8000/v1/mcp \\
  -H "Authorization: Bearer $TOKEN" \\
  -H "Content-Type: application/json" \\
  -d '{
    "jsonrpc": "2.0",
    "method": "tools/call",
    "params": {
      "name": "google_search",
      "arguments": {"q": "AI news"}
    }
  }'"""


def adapt(example: str, stack: Stack, **placeholders: str) -> str:
    text = example.replace("http://localhost:8000", stack.base_url).replace("https://api.Jan.ai", stack.base_url)
    for model in ("qwen2.5-0.5b-instruct", "gpt-4"):
        text = text.replace(model, MODEL)
    for placeholder, value in placeholders.items():
        text = text.replace(placeholder, value)
    return text


def sh(script: str) -> str:
    result = subprocess.run(["bash", "-c", "set -eo pipefail\n" + script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_guest_login_and_token_use(stack: Stack) -> None:
    login = json.loads(sh(adapt(GUEST_LOGIN, stack)))
    assert {"access_token", "refresh_token", "expires_in"} <= set(login) and login["expires_in"] == 300
    models = json.loads(sh(adapt(USE_TOKEN, stack, **{"<access_token>": login["access_token"]})))
    assert models["data"][0]["id"] == MODEL


def test_api_key_header(stack: Stack) -> None:
    user = guest_login(stack)
    created = httpx.post(f"{stack.base_url}/auth/api-keys", json={"name": "seed example"},
                         headers={"Authorization": f"Bearer {user['access_token']}"})
    key = created.json()["key"]
    # As written, the example is a GET without a body: OpenAI's list of the caller's stored chat completions,
    # empty for a new user.
    listed = json.loads(sh(adapt(API_KEY, stack, sk_your_api_key_here=key)))
    assert listed == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False,
                      "total": 0, "total_count": 0}
    assert httpx.get(f"{stack.base_url}/v1/chat/completions", headers={"X-API-Key": key}).status_code == 200
    assert json.loads(sh(adapt(API_KEY, stack)))["error"]["code"] == "invalid_api_key"
    # The same header on the chat request of the quick start.
    chat = adapt(API_KEY, stack, sk_your_api_key_here=key).replace(
        "curl ", """curl -X POST -H "Content-Type: application/json" -d '{"model": "qwen2.5-0.5b-instruct", """
        """"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 5}' """, 1
    )
    completion = json.loads(sh(adapt(chat, stack)))
    assert completion["object"] == "chat.completion"


def test_token_refresh(stack: Stack) -> None:
    refresh_token = guest_login(stack)["refresh_token"]
    refreshed = json.loads(sh(adapt(REFRESH, stack, **{"your-refresh-token": refresh_token})))
    assert refreshed["access_token"] and refreshed["refresh_token"] != refresh_token


def test_quick_start(stack: Stack) -> None:
    output = sh(adapt(QUICK_START, stack))
    decoder = json.JSONDecoder()
    completion, end = decoder.raw_decode(output)
    models, _ = decoder.raw_decode(output[end:].lstrip())
    assert completion["object"] == "chat.completion" and completion["choices"][0]["message"]["role"] == "assistant"
    assert models["object"] == "list"


def test_streaming_curl(stack: Stack) -> None:
    token = guest_login(stack)["access_token"]
    output = sh(adapt(STREAMING, stack, YOUR_API_KEY=token))
    events = [line for line in output.split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    assert all(json.loads(e.removeprefix("data: "))["object"] == "chat.completion.chunk" for e in events[:-1])


def test_python_sdk_example(stack: Stack, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(adapt(PYTHON_SDK, stack, **{"your-token": guest_login(stack)["access_token"]}))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_node_sdk_example(stack: Stack) -> None:
    script = NODE_DIR / "example.mjs"
    script.write_text(adapt(NODE_SDK, stack, **{"your-token": guest_login(stack)["access_token"]}))
    try:
        result = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=120, cwd=NODE_DIR)
    finally:
        script.unlink()
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["choices"][0]["message"]["role"] == "assistant"


def test_mcp_tools_call(stack: Stack) -> None:
    """No `id` and no initialize, as written: answered (with `"id": null`) rather than taken for a notification."""
    token = guest_login(stack)["access_token"]
    answer = json.loads(sh(f"TOKEN={token}\n" + adapt(MCP_TOOLS, stack)))
    assert answer["jsonrpc"] == "2.0" and answer["id"] is None
    result = answer["result"]
    assert result["content"][0]["type"] == "text"
    if not (stack.env.get("JAN_SEARXNG_URL") or stack.env.get("JAN_SERPER_API_KEY")):
        # No search engine configured: still a JSON-RPC result, saying which setting is missing.
        assert result["isError"] is True
        assert "JAN_SEARXNG_URL" in result["content"][0]["text"] or "JAN_SERPER_API_KEY" in result["content"][0]["text"]
    else:
        assert result["isError"] is False and result["structuredContent"]["query"] == "AI news"
