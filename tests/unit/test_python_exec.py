"""python_exec against the real sandbox (bubblewrap; no mocks) and SandboxFusion's API (a loopback stand-in).

Short limits keep this fast: 2 s wall clock, 1 s of CPU where a test burns it on purpose. After every hostile
program the next run must still work.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.core.config import Settings
from server.mcp.tools.base import InvalidToolArguments, ToolContext, ToolError
from server.mcp.tools.python_exec import PythonExecTool
from server.mcp.tools.python_exec.bwrap import SERVER_CHECKOUT
from server.mcp.tools.python_exec.sandboxfusion import SandboxFusionBackend
from tests.support.sandboxfusion_standin import SandboxFusionStandIn

CONTEXT = ToolContext(user_id="user-1", request_id="req-1")
needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap is not installed (.ci/run installs it)"
)


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "python_exec_timeout_seconds": 2.0,
        "python_exec_cpu_seconds": 5,
        "python_exec_output_bytes": 4096,
        **overrides,
    }
    return Settings(**values)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    return tmp_path / "data"


@pytest.fixture
def tool(tmp_path: Path, data_dir: Path) -> PythonExecTool:
    return PythonExecTool(settings(tmp_path))


async def run(tool: PythonExecTool, code: str, **arguments: Any) -> dict[str, Any]:
    return await tool.call(CONTEXT, {"code": code, **arguments})


def existing(paths: list[Path]) -> list[Path]:
    return [path for path in paths if os.path.lexists(path)]


async def still_works(tool: PythonExecTool) -> None:
    result = await run(tool, "print(6 * 7)")
    assert (result["stdout"], result["exit_code"], result["error"]) == ("42\n", 0, None)


@needs_bwrap
async def test_prints_and_echoes_the_session(tool: PythonExecTool) -> None:
    assert tool.unavailable_reason() is None
    result = await run(tool, "import sys\nprint('hello')\nprint('warn', file=sys.stderr)", session_id="s-1")
    assert result["stdout"] == "hello\n"
    assert result["stderr"] == "warn\n"
    assert (result["exit_code"], result["timed_out"], result["error"], result["session_id"]) == (0, False, None, "s-1")
    assert result["duration_ms"] >= 0 and result["artifacts"] == []
    generated = await run(tool, "pass")
    assert generated["session_id"].startswith("pyexec_")


@needs_bwrap
async def test_an_exception_gives_a_traceback_and_a_nonzero_exit(tool: PythonExecTool) -> None:
    result = await run(tool, "def f():\n    raise ValueError('boom')\nf()")
    assert result["exit_code"] == 1
    assert "Traceback" in result["stderr"] and "ValueError: boom" in result["stderr"]
    assert result["timed_out"] is False


@needs_bwrap
async def test_an_infinite_loop_times_out(tool: PythonExecTool) -> None:
    result = await run(tool, "while True:\n    pass")
    assert result["timed_out"] is True and result["exit_code"] is None
    assert 2000 <= result["duration_ms"] < 4000
    assert "time limit" in result["error"]
    await still_works(tool)


@needs_bwrap
async def test_the_cpu_limit_stops_a_busy_run(tmp_path: Path, data_dir: Path) -> None:
    tool = PythonExecTool(settings(tmp_path, python_exec_cpu_seconds=1, python_exec_timeout_seconds=5))
    result = await run(tool, "while True:\n    pass")
    assert result["timed_out"] is False and "CPU" in result["error"]
    await still_works(tool)


@needs_bwrap
async def test_a_memory_bomb_is_contained(tool: PythonExecTool) -> None:
    result = await run(tool, "blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 1024 * 1024))")
    assert result["exit_code"] != 0 and "MemoryError" in result["stderr"]
    await still_works(tool)


@needs_bwrap
async def test_a_fork_bomb_is_contained(tool: PythonExecTool) -> None:
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    result = await run(tool, code)
    assert result["timed_out"] is True
    await still_works(tool)


@needs_bwrap
async def test_process_count_is_limited(tool: PythonExecTool) -> None:
    code = (
        "import os, time\nn = 0\ntry:\n    for _ in range(200):\n        if os.fork() == 0:\n"
        "            time.sleep(5)\n            os._exit(0)\n        n += 1\nexcept OSError as e:\n"
        "    print('refused', n, e.errno)"
    )
    result = await run(tool, code)
    assert result["stdout"].startswith("refused"), result
    assert int(result["stdout"].split()[1]) < 16
    await still_works(tool)


@needs_bwrap
async def test_huge_output_is_capped_and_stops_the_run(tool: PythonExecTool) -> None:
    result = await run(tool, "while True:\n    print('x' * 1000)")
    assert result["stdout"].endswith("[output truncated at 4096 bytes]")
    assert len(result["stdout"]) < 4096 + 100
    assert result["timed_out"] is False and "output exceeded" in result["error"]
    assert result["duration_ms"] < 2000
    await still_works(tool)


@needs_bwrap
async def test_no_network(tool: PythonExecTool) -> None:
    code = (
        "import socket\nfor address in [('127.0.0.1', 22), ('1.1.1.1', 80)]:\n    try:\n"
        "        socket.create_connection(address, timeout=1)\n        print('connected', address)\n"
        "    except OSError as e:\n        print('refused', e.errno)\n"
        "print(sorted(i[1] for i in socket.if_nameindex()))"
    )
    result = await run(tool, code)
    assert "connected" not in result["stdout"]
    assert result["stdout"].count("refused") == 2
    assert result["stdout"].strip().endswith("['lo']")


@needs_bwrap
async def test_nothing_outside_its_working_dir_is_writable(tool: PythonExecTool, data_dir: Path) -> None:
    host_tmp = Path(tempfile.gettempdir())
    targets = [
        "/etc/jan-probe",
        "/tmp/jan-probe",
        str(SERVER_CHECKOUT / "jan-probe"),
        str(data_dir / "jan-probe"),
        "/var/tmp/jan-probe",
        "/dev/shm/jan-probe",
        "/root/jan-probe",
        "/usr/jan-probe",
    ]
    code = (
        f"import os\nfor path in {targets!r}:\n    try:\n        open(path, 'w').write('x')\n"
        "        print('WROTE', path)\n    except OSError as e:\n        print('denied', path, e.errno)\n"
        "open('mine.txt', 'w').write('ok')\nprint('cwd', os.getcwd())"
    )
    result = await run(tool, code)
    assert "WROTE" not in result["stdout"], result["stdout"]
    assert result["stdout"].count("denied") == len(targets)
    work_dir = Path(result["stdout"].split("cwd ")[1].strip())
    assert existing([*map(Path, targets), host_tmp / "jan-probe", work_dir]) == [], (
        "nothing was written outside, and the working dir is removed after the run"
    )
    assert [a["name"] for a in result["artifacts"]] == ["mine.txt"]


@needs_bwrap
async def test_secrets_and_the_data_dir_are_not_visible(
    tool: PythonExecTool, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JAN_API_KEY_SECRET", "s" * 40)
    (data_dir / "jwt-signing-key.pem").write_text("PRIVATE")
    key = data_dir / "jwt-signing-key.pem"
    code = (
        "import json, os\n"
        f"print(json.dumps([sorted(os.environ), os.path.exists({str(key)!r}), os.listdir({str(SERVER_CHECKOUT)!r})]))"
    )
    result = await run(tool, code)
    names, key_visible, checkout = json.loads(result["stdout"])
    assert not [name for name in names if name.startswith("JAN_")] and "PATH" in names
    assert key_visible is False
    assert checkout in ([], [".venv"]), "the checkout is hidden; only a venv inside it is put back for Python"


@needs_bwrap
async def test_artifacts_list_files_with_content_and_skip_links(tool: PythonExecTool) -> None:
    code = (
        "import os\nos.makedirs('out')\nopen('out/data.csv', 'w').write('a,b\\n1,2\\n')\n"
        "open('big.bin', 'wb').write(b'\\0' * 300_000)\nos.symlink('/etc/passwd', 'passwd')\nos.mkfifo('pipe')"
    )
    result = await run(tool, code)
    assert result["exit_code"] == 0, result
    artifacts = {a["name"]: a for a in result["artifacts"]}
    assert set(artifacts) == {"out/data.csv", "big.bin"}
    assert base64.b64decode(artifacts["out/data.csv"]["content_base64"]) == b"a,b\n1,2\n"
    assert artifacts["big.bin"]["size"] == 300_000 and "content_base64" not in artifacts["big.bin"]


@needs_bwrap
async def test_runs_do_not_share_state(tool: PythonExecTool) -> None:
    await run(tool, "open('state.txt', 'w').write('1')", session_id="same")
    result = await run(tool, "import os\nprint(os.listdir('.'))", session_id="same")
    assert result["stdout"] == "[]\n"


@needs_bwrap
async def test_concurrent_runs_do_not_see_each_other(tool: PythonExecTool) -> None:
    code = (
        "import os, time\ntime.sleep(0.3)\nruns = os.path.dirname(os.path.dirname(os.getcwd()))\n"
        "print({i}, len([name for name in os.listdir(runs) if name.startswith('jan-pyexec-')]))"
    )
    # Counted by name: the temp dir also holds mount points of hidden paths (e.g. a checkout under /tmp).
    results = await asyncio.gather(*(run(tool, code.format(i=i)) for i in range(4)))
    assert [r["stdout"] for r in results] == ["0 1\n", "1 1\n", "2 1\n", "3 1\n"], "each sees only its own run dir"


@needs_bwrap
async def test_arguments_are_checked(tool: PythonExecTool) -> None:
    with pytest.raises(InvalidToolArguments, match="language"):
        await run(tool, "print(1)", language="ruby")
    with pytest.raises(InvalidToolArguments, match="code"):
        await tool.call(CONTEXT, {"code": "  "})


@needs_bwrap
async def test_the_approval_gate(tmp_path: Path, data_dir: Path) -> None:
    gated = PythonExecTool(settings(tmp_path, python_exec_require_approval=True))
    assert "approved=true" in gated.description
    for arguments in ({}, {"approved": False}):
        with pytest.raises(ToolError, match="approval"):
            await run(gated, "print(1)", **arguments)
    assert (await run(gated, "print(1)", approved=True))["stdout"] == "1\n"


def test_without_bwrap_the_tool_refuses(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    tool = PythonExecTool(settings(tmp_path))
    reason = tool.unavailable_reason()
    assert reason is not None and "bubblewrap" in reason


@pytest.fixture
def standin() -> Iterator[SandboxFusionStandIn]:
    with SandboxFusionStandIn() as server:
        yield server


async def test_sandboxfusion_backend(tmp_path: Path, standin: SandboxFusionStandIn) -> None:
    tool = PythonExecTool(
        settings(tmp_path, python_exec_backend="sandboxfusion", python_exec_sandboxfusion_url=standin.url + "/")
    )
    assert isinstance(tool.backend, SandboxFusionBackend)
    await tool.backend.ready()
    assert tool.unavailable_reason() is None
    ok = await run(tool, "print('hi')", session_id="sf")
    assert (ok["stdout"], ok["exit_code"], ok["timed_out"], ok["session_id"], ok["error"]) == (
        "hi\n",
        0,
        False,
        "sf",
        None,
    )
    failed = await run(tool, "raise SystemExit(3)")
    assert failed["exit_code"] == 3
    slow = await run(tool, "while True:\n    pass")
    assert slow["timed_out"] is True and slow["exit_code"] is None
    assert standin.requests[0] == {
        "code": "print('hi')",
        "language": "python",
        "run_timeout": 2.0,
        "compile_timeout": 2.0,
        "memory_limit_MB": 512,
        "files": {},
        "fetch_files": [],
    }
    capped = await run(tool, "print('y' * 10000)")
    assert capped["stdout"].endswith("[output truncated at 4096 bytes]")


async def test_sandboxfusion_unset_or_unreachable(tmp_path: Path) -> None:
    unset = PythonExecTool(settings(tmp_path, python_exec_backend="sandboxfusion"))
    assert "JAN_PYTHON_EXEC_SANDBOXFUSION_URL" in (unset.unavailable_reason() or "")
    with SandboxFusionStandIn() as gone:
        url = gone.url
    down = PythonExecTool(settings(tmp_path, python_exec_backend="sandboxfusion", python_exec_sandboxfusion_url=url))
    assert isinstance(down.backend, SandboxFusionBackend)
    await down.backend.ready()
    assert "not reachable" in (down.unavailable_reason() or "")
    with pytest.raises(ToolError, match="not reachable"):
        await run(down, "print(1)")


def sandboxed_processes() -> set[int]:
    """PIDs (host view) of processes running a sandbox's main.py."""
    found = set()
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if b"/jan-pyexec-" in cmdline.read():
                    found.add(int(entry))
        except (OSError, ValueError):
            continue
    return found


@needs_bwrap
async def test_a_cancelled_call_kills_its_run(tmp_path: Path, data_dir: Path) -> None:
    tool = PythonExecTool(settings(tmp_path, python_exec_timeout_seconds=30))
    before = await asyncio.to_thread(sandboxed_processes)
    call = asyncio.create_task(run(tool, "import time\ntime.sleep(60)"))
    for _ in range(100):
        await asyncio.sleep(0.05)
        running = await asyncio.to_thread(sandboxed_processes) - before
        if running:
            break
    assert running, "the run started"
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.sleep(0.2)
    assert not (await asyncio.to_thread(sandboxed_processes)) & running
    await still_works(tool)
