"""Benchmarks, run from the repository root: `python -m bench.gateway`, `python -m bench.chat` (bench/README.md).

Shared helpers: the whole stack as a subprocess (the same launcher the e2e tests use), guest login, the raw
connection the lean clients speak over, the memory of a process tree, percentiles and table printing. Nothing
here writes into the repository.
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.support.stack import Stack, make_stack

ROOT = Path(__file__).resolve().parents[1]


class RawConnection:
    """A TCP connection with its read buffer: what the lean benchmark clients speak HTTP/1.1 and h2c over, so
    client overhead stays far below the servers' (no HTTP library in the measured loop)."""

    def __init__(self, host: str, port: int, timeout: float | None = None) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        return data

    def close(self) -> None:
        self.sock.close()


@contextmanager
def running_stack(**settings: str):  # type: ignore[no-untyped-def]
    """The whole Jan Server (gRPC services + Envoy) in a subprocess; stopped (SIGTERM, by PID) on exit."""
    stack = make_stack(**settings)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def _post_json(stack: Stack, path: str, body: dict[str, str], headers: dict[str, str], what: str) -> dict[str, str]:
    """POSTs `body` to the stack and returns the JSON answer, which must be a 201."""
    host, port = stack.base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("POST", path, body=json.dumps(body).encode(),
                           headers={**headers, "Content-Type": "application/json"})
        response = connection.getresponse()
        reply = response.read()
        if response.status != 201:
            raise RuntimeError(f"{what} failed: {response.status} {reply!r}")
        answer: dict[str, str] = json.loads(reply)
        return answer
    finally:
        connection.close()


def guest_token(stack: Stack) -> str:
    """A fresh access token (valid 5 minutes) from POST /llm/auth/guest-login."""
    return _post_json(stack, "/llm/auth/guest-login", {}, {}, "guest login")["access_token"]


def api_key(stack: Stack, token: str) -> str:
    """A new API key of the guest behind `token`, from POST /auth/api-keys."""
    return _post_json(stack, "/auth/api-keys", {"name": "bench"}, {"Authorization": f"Bearer {token}"},
                      "API key creation")["key"]


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def _status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_memory(pid: int) -> list[tuple[str, int, int]]:
    """(command name, RSS MiB, PSS MiB) for each process of the tree rooted at pid."""
    rows = []
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/comm") as comm:
                name = comm.read().strip()
            rows.append((name, _status_kib(member, "VmRSS") // 1024, _pss_kib(member) // 1024))
        except OSError:
            continue
    return rows


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (fraction in 0..1)."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    index = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples) if samples else float("nan")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A Markdown table, so the output can be pasted into docs/benchmarks.md as is."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(header), *(len(row[i]) for row in cells)) for i, header in enumerate(headers)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


def machine_line() -> str:
    """CPU model, core count, RAM, Python and the load average when the run started."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as meminfo:
            ram_gib = int(meminfo.readline().split()[1]) / 1024 / 1024
    except OSError:
        ram_gib = 0.0
    load = os.getloadavg()[0]
    return (
        f"{model}, {os.cpu_count()} cores, {ram_gib:.0f} GiB RAM, Python {platform.python_version()}, "
        f"git {git_revision()}, load average {load:.2f} at start, {time.strftime('%Y-%m-%d %H:%M')}"
    )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def git_revision() -> str:
    """The commit benchmarked, marked `+dirty` when the work tree has changes."""
    try:
        revision = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return revision + ("+dirty" if dirty.strip() else "")
