"""The local backend: one bubblewrap sandbox per run (server/mcp/tools/python_exec/bwrap.py says what it isolates).

A run gets a fresh directory `<tmp>/jan-pyexec-*/` holding `main.py` (read-only to the code) and `work/` (its
working dir, $HOME and $TMPDIR, the only place it can write), removed when the run ends. Output is read as it
comes; past the cap the run is stopped. The wall-clock timeout kills bwrap's process group, and with it the pid
namespace, so nothing the code started survives. Nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from server.core.config import Settings
from server.mcp.tools.python_exec import bwrap
from server.mcp.tools.python_exec.result import RunResult

_READ_CHUNK = 16 * 1024
_MAX_ARTIFACTS = 100


class LocalSandbox:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._limits = bwrap.Limits(
            cpu_seconds=settings.python_exec_cpu_seconds,
            memory_bytes=settings.python_exec_memory_mb * 1024 * 1024,
            file_size_bytes=settings.python_exec_file_size_mb * 1024 * 1024,
            processes=settings.python_exec_max_processes,
        )
        self._python = settings.python_exec_interpreter or sys.executable
        self._exposed = bwrap.interpreter_roots(settings.python_exec_interpreter)
        # The temp dir holds the other runs' directories too: each run sees only its own, put back by bwrap.
        self._hidden = [str(settings.data_dir), str(bwrap.SERVER_CHECKOUT), os.getcwd(), tempfile.gettempdir()]
        self._hidden += settings.python_exec_hidden_paths
        self._as_root = os.geteuid() == 0
        # One uid per concurrent run (as root): RLIMIT_NPROC counts per uid, so runs must not share one.
        self._free_uids: asyncio.Queue[int] = asyncio.Queue()
        for slot in range(settings.python_exec_max_concurrent):
            self._free_uids.put_nowait(settings.python_exec_uid_base + slot)
        self._bwrap = bwrap.find_bwrap()
        self._unavailable = self._check()

    def unavailable_reason(self) -> str | None:
        return self._unavailable

    def _check(self) -> str | None:
        """Once, at startup (a ~10 ms subprocess, before the server takes requests)."""
        if self._bwrap is None:
            return (
                "python_exec needs bubblewrap for its local sandbox and `bwrap` is not installed: without it nothing "
                "keeps the code from writing to this machine's files. Install it (Debian: apt-get install "
                "bubblewrap) or set JAN_PYTHON_EXEC_BACKEND=sandboxfusion with JAN_PYTHON_EXEC_SANDBOXFUSION_URL."
            )
        if not os.access(self._python, os.X_OK):
            return f"python_exec's interpreter {self._python!r} (JAN_PYTHON_EXEC_INTERPRETER) is not executable"
        failure = bwrap.probe(self._bwrap)
        if failure is not None:
            hint = "" if self._as_root else " (are unprivileged user namespaces disabled?)"
            return f"python_exec's sandbox cannot start: bwrap failed with {failure!r}{hint}"
        return None

    async def run(self, code: str) -> RunResult:
        assert self._bwrap is not None
        uid = await self._free_uids.get()
        try:
            return await self._run(code, uid if self._as_root else None)
        finally:
            self._free_uids.put_nowait(uid)

    async def _run(self, code: str, uid: int | None) -> RunResult:
        run_dir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="jan-pyexec-"))
        try:
            work_dir = run_dir / "work"
            await asyncio.to_thread(_prepare, run_dir, work_dir, code, uid)
            argv = bwrap.command(
                bwrap=self._bwrap or "bwrap",
                python=self._python,
                run_dir=run_dir,
                work_dir=work_dir,
                hidden=self._hidden,
                exposed=self._exposed,
                limits=self._limits,
                uid=uid,
                env=_sandbox_env(work_dir),
            )
            result = await self._supervise(argv)
            result.artifacts = await asyncio.to_thread(
                collect_artifacts, work_dir, self._settings.python_exec_artifact_inline_bytes
            )
            return result
        finally:
            await asyncio.to_thread(shutil.rmtree, run_dir, True)

    async def _supervise(self, argv: list[str]) -> RunResult:
        cap = self._settings.python_exec_output_bytes
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        overflow = asyncio.Event()
        assert process.stdout is not None and process.stderr is not None
        readers = [
            asyncio.create_task(_read_capped(process.stdout, cap, overflow)),
            asyncio.create_task(_read_capped(process.stderr, cap, overflow)),
        ]
        waiter = asyncio.create_task(process.wait())
        overflowed = asyncio.create_task(overflow.wait())
        try:
            await asyncio.wait(
                {waiter, overflowed}, timeout=self._settings.python_exec_timeout_seconds, return_when="FIRST_COMPLETED"
            )
            timed_out = not waiter.done() and not overflow.is_set()
            if not waiter.done():
                _kill_group(process.pid)
            await waiter
            (stdout, stdout_cut), (stderr, stderr_cut) = await asyncio.gather(*readers)
        finally:
            overflowed.cancel()
            if process.returncode is None:  # the call was cancelled (client gone): the run must not outlive it
                _kill_group(process.pid)
                for task in readers:
                    task.cancel()
                await asyncio.wait_for(asyncio.shield(waiter), timeout=5)
        duration_ms = round((time.monotonic() - started) * 1000)
        error = None
        if timed_out:
            error = f"the run exceeded the {self._settings.python_exec_timeout_seconds:g} s time limit and was killed"
        elif stdout_cut or stderr_cut:
            error = f"the output exceeded {cap} bytes and the run was stopped"
        stopped = timed_out or stdout_cut or stderr_cut
        return RunResult(
            stdout=_decode(stdout, stdout_cut, cap),
            stderr=_decode(stderr, stderr_cut, cap),
            exit_code=None if stopped else process.returncode,
            duration_ms=duration_ms,
            timed_out=timed_out,
            error=error or _limit_hint(process.returncode),
        )


def _prepare(run_dir: Path, work_dir: Path, code: str, uid: int | None) -> None:
    run_dir.chmod(0o755)
    (run_dir / "main.py").write_text(code, encoding="utf-8")
    (run_dir / "main.py").chmod(0o644)
    work_dir.mkdir(mode=0o700)
    if uid is not None:
        os.chown(work_dir, uid, uid)


def _sandbox_env(work_dir: Path) -> dict[str, str]:
    """The whole environment of the code: nothing of the server's (its JAN_* secrets stay out)."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(work_dir),
        "TMPDIR": str(work_dir),
        "LANG": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        # Thread pools count against the process limit; one thread each keeps numpy & co. inside it.
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
    }


async def _read_capped(stream: asyncio.StreamReader, cap: int, overflow: asyncio.Event) -> tuple[bytes, bool]:
    """Reads until EOF, keeping at most `cap` bytes; past that it flags the overflow (the supervisor then kills
    the run) and only drains what is left in the pipe, so the process's exit can be collected."""
    data = bytearray()
    while chunk := await stream.read(_READ_CHUNK):
        if len(data) + len(chunk) > cap:
            data += chunk[: cap - len(data)]
            overflow.set()
            while await stream.read(_READ_CHUNK):
                pass
            return bytes(data), True
        data += chunk
    return bytes(data), False


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _decode(data: bytes, truncated: bool, cap: int) -> str:
    text = data.decode("utf-8", errors="replace")
    return text + f"\n[output truncated at {cap} bytes]" if truncated else text


def _limit_hint(returncode: int | None) -> str | None:
    """bwrap reports a child killed by signal N as 128+N: name the limits that kill that way."""
    if returncode == 128 + signal.SIGXCPU:
        return "the run used up its CPU-time limit"
    if returncode == 128 + signal.SIGXFSZ:
        return "the run wrote a file larger than its file-size limit"
    if returncode == 128 + signal.SIGKILL:
        return "the run was killed (SIGKILL)"
    return None


def collect_artifacts(work_dir: Path, inline_budget: int) -> list[dict[str, Any]]:
    """The regular files the code left in its working dir: name (relative path), size, and the content
    base64-encoded while the budget lasts. Symlinks, FIFOs and hard links to elsewhere are skipped and never
    followed (the code chose them; the server reads them with its own rights)."""
    artifacts: list[dict[str, Any]] = []
    for dirpath, dirnames, filenames in os.walk(work_dir, followlinks=False):
        dirnames.sort()
        for filename in sorted(filenames):
            path = Path(dirpath) / filename
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
                continue
            artifact: dict[str, Any] = {"name": str(path.relative_to(work_dir)), "size": info.st_size, "url": None}
            if info.st_size <= inline_budget:
                content = _read_regular(path)
                if content is not None:
                    artifact["content_base64"] = base64.b64encode(content).decode("ascii")
                    inline_budget -= len(content)
            artifacts.append(artifact)
            if len(artifacts) >= _MAX_ARTIFACTS:
                return artifacts
    return artifacts


def _read_regular(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            return None
        return file.read()
