"""python_exec through `POST /v1/mcp` (Envoy, auth, the MCP endpoint, the real bubblewrap sandbox), and its
SandboxFusion backend against the loopback stand-in (tests/support/sandboxfusion_standin.py).

The local stack requires approval and allows 2 s per run, so the hostile programs end quickly; after each one
the server must still answer `/healthz`-style traffic and run the next program. The full catalogue of hostile
programs runs against the tool directly in tests/unit/test_python_exec.py.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from tests.e2e.conftest import mcp_rpc
from tests.support.sandboxfusion_standin import SandboxFusionStandIn
from tests.support.stack import Stack, make_stack

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed (.ci/run does)")


@pytest.fixture(scope="module")
def sandbox_stack() -> Iterator[Stack]:
    stack = make_stack(
        python_exec_require_approval="true", python_exec_timeout_seconds="2", python_exec_output_bytes="4096"
    )
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def standin() -> Iterator[SandboxFusionStandIn]:
    with SandboxFusionStandIn() as server:
        yield server


@pytest.fixture(scope="module")
def remote_stack(standin: SandboxFusionStandIn) -> Iterator[Stack]:
    stack = make_stack(python_exec_backend="sandboxfusion", python_exec_sandboxfusion_url=standin.url)
    stack.start()
    yield stack
    stack.stop()


def python_exec(stack: Stack, code: str, **arguments: Any) -> dict[str, Any]:
    """The payload of a successful call; checked against the advertised outputSchema and the text content."""
    result = mcp_rpc(
        stack, "tools/call", {"name": "python_exec", "arguments": {"code": code, "approved": True, **arguments}}
    )
    assert result["isError"] is False, result["content"][0]["text"]
    payload: dict[str, Any] = result["structuredContent"]
    assert json.loads(result["content"][0]["text"]) == payload
    Draft202012Validator(listed(stack)["outputSchema"]).validate(payload)
    return payload


def listed(stack: Stack) -> dict[str, Any]:
    tools = {tool["name"]: tool for tool in mcp_rpc(stack, "tools/list", {})["tools"]}
    return tools["python_exec"]


def assert_healthy(stack: Stack) -> None:
    assert python_exec(stack, "print(6 * 7)")["stdout"] == "42\n"


def test_listed_as_available_with_the_original_arguments(sandbox_stack: Stack) -> None:
    tool = listed(sandbox_stack)
    assert "unavailable" not in tool["description"] and "approved=true" in tool["description"]
    assert set(tool["inputSchema"]["properties"]) == {"code", "language", "session_id", "approved"}
    assert tool["inputSchema"]["required"] == ["code"]


def test_prints_and_exceptions(sandbox_stack: Stack) -> None:
    ok = python_exec(sandbox_stack, "print('hello from the sandbox')", session_id="abc")
    assert (ok["stdout"], ok["exit_code"], ok["session_id"], ok["timed_out"]) == (
        "hello from the sandbox\n",
        0,
        "abc",
        False,
    )
    failed = python_exec(sandbox_stack, "import json\njson.loads('{')")
    assert failed["exit_code"] == 1 and "JSONDecodeError" in failed["stderr"]


def test_the_approval_gate(sandbox_stack: Stack) -> None:
    for arguments in ({"code": "print(1)"}, {"code": "print(1)", "approved": False}):
        result = mcp_rpc(sandbox_stack, "tools/call", {"name": "python_exec", "arguments": arguments})
        assert result["isError"] is True and "approved=true" in result["content"][0]["text"]


def test_hostile_programs_are_contained_and_the_server_stays_healthy(sandbox_stack: Stack) -> None:
    looping = python_exec(sandbox_stack, "while True:\n    pass")
    assert looping["timed_out"] is True and looping["exit_code"] is None
    assert_healthy(sandbox_stack)
    forking = python_exec(
        sandbox_stack, "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    )
    assert forking["timed_out"] is True
    assert_healthy(sandbox_stack)
    hungry = python_exec(sandbox_stack, "x = bytearray(8 * 1024 ** 3)")
    assert "MemoryError" in hungry["stderr"]
    assert_healthy(sandbox_stack)
    chatty = python_exec(sandbox_stack, "while True:\n    print('y' * 500)")
    assert chatty["stdout"].endswith("[output truncated at 4096 bytes]") and "output exceeded" in chatty["error"]
    assert_healthy(sandbox_stack)


def test_no_network_no_writes_outside_no_secrets(sandbox_stack: Stack) -> None:
    port = sandbox_stack.env["JAN_PORT"]
    data_dir = str(sandbox_stack.data_dir)
    code = f"""
import json, os, socket
report = {{}}
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=1)
    report["connect"] = "connected"
except OSError as error:
    report["connect"] = error.errno
writes = {{}}
for path in ["/etc/probe", "/tmp/probe", {data_dir + "/probe"!r}, os.path.expanduser("~/mine")]:
    try:
        open(path, "w").write("x")
        writes[path] = "wrote"
    except OSError as error:
        writes[path] = error.errno
report["writes"] = writes
report["env"] = sorted(os.environ)
report["data_dir_visible"] = os.path.exists({data_dir!r} + "/jan.db")
print(json.dumps(report))
"""
    report = json.loads(python_exec(sandbox_stack, code)["stdout"])
    assert report["connect"] != "connected"
    written = [path for path, outcome in report["writes"].items() if outcome == "wrote"]
    assert len(written) == 1 and written[0].endswith("/mine"), report["writes"]
    assert not [name for name in report["env"] if name.startswith("JAN_")]
    assert report["data_dir_visible"] is False
    assert not (sandbox_stack.data_dir / "probe").exists()


def test_sandboxfusion_backend(remote_stack: Stack, standin: SandboxFusionStandIn) -> None:
    payload = python_exec(remote_stack, "print(sum(range(10)))", session_id="remote")
    assert (payload["stdout"], payload["exit_code"], payload["session_id"], payload["error"]) == (
        "45\n",
        0,
        "remote",
        None,
    )
    assert standin.requests[-1]["code"] == "print(sum(range(10)))" and standin.requests[-1]["language"] == "python"
    assert "unavailable" not in listed(remote_stack)["description"]
