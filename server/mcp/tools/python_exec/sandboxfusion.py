"""The remote backend: a SandboxFusion server (bytedance/SandboxFusion), `POST {url}/run_code`.

Request: `{code, language: "python", run_timeout, compile_timeout, memory_limit_MB, files: {}, fetch_files: []}`.
Response: `{status: Success|Failed|SandboxError, message, run_result: {status: Finished|Error|TimeLimitExceeded,
execution_time, return_code, stdout, stderr}, compile_result, executor_pod_name, files}`. Reachability is
`GET {url}/v1/ping` ("pong"), checked at most every `_PROBE_SECONDS` and never on the caller's path: the tool's
availability is the last verdict, refreshed in the background.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from typing import Any

import httpx

from server.core.config import Settings
from server.mcp.tools.base import ToolError
from server.mcp.tools.python_exec.result import RunResult

_PROBE_SECONDS = 15.0
_PROBE_TIMEOUT = 2.0
# Time SandboxFusion needs around the run itself (queueing, process start, the HTTP round trip).
_REQUEST_MARGIN_SECONDS = 10.0


class SandboxFusionBackend:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._url = settings.python_exec_sandboxfusion_url.rstrip("/")
        self._verdict: str | None = None
        self._checked_at = -_PROBE_SECONDS
        self._probe: asyncio.Task[None] | None = None
        self._schedule_probe()

    def unavailable_reason(self) -> str | None:
        if not self._url:
            return "python_exec is set to SandboxFusion but JAN_PYTHON_EXEC_SANDBOXFUSION_URL is not set"
        self._schedule_probe()
        return self._verdict

    async def run(self, code: str) -> RunResult:
        if not self._url:
            raise ToolError(self.unavailable_reason() or "no SandboxFusion URL")
        timeout = self._settings.python_exec_timeout_seconds
        request = {
            "code": code,
            "language": "python",
            "run_timeout": timeout,
            "compile_timeout": timeout,
            "memory_limit_MB": self._settings.python_exec_memory_mb,
            "files": {},
            "fetch_files": [],
        }
        started = time.monotonic()
        try:
            async with httpx.AsyncClient(timeout=timeout + _REQUEST_MARGIN_SECONDS) as client:
                response = await client.post(f"{self._url}/run_code", json=request)
        except httpx.HTTPError as exc:
            self._record(f"SandboxFusion at {self._url} is not reachable: {exc.__class__.__name__}")
            raise ToolError(f"SandboxFusion at {self._url} did not answer: {exc.__class__.__name__}") from exc
        if response.status_code != 200:
            raise ToolError(f"SandboxFusion answered HTTP {response.status_code}: {response.text[:500]}")
        try:
            body = response.json()
        except ValueError as exc:
            raise ToolError("SandboxFusion answered something that is not JSON") from exc
        return self._result(body, round((time.monotonic() - started) * 1000))

    def _result(self, body: dict[str, Any], round_trip_ms: int) -> RunResult:
        run = body.get("run_result") or {}
        cap = self._settings.python_exec_output_bytes
        timed_out = run.get("status") == "TimeLimitExceeded"
        error = None
        if body.get("status") == "SandboxError":
            error = f"SandboxFusion: {body.get('message') or 'sandbox error'}"
        elif timed_out:
            error = f"the run exceeded the {self._settings.python_exec_timeout_seconds:g} s time limit and was killed"
        execution_time = run.get("execution_time")
        return RunResult(
            stdout=_capped(run.get("stdout") or "", cap),
            stderr=_capped(run.get("stderr") or "", cap),
            exit_code=None if timed_out else run.get("return_code"),
            duration_ms=round(execution_time * 1000) if isinstance(execution_time, int | float) else round_trip_ms,
            timed_out=timed_out,
            error=error,
            artifacts=[
                {"name": name, "size": _decoded_size(content), "url": None, "content_base64": content}
                for name, content in sorted((body.get("files") or {}).items())
            ],
        )

    def _schedule_probe(self) -> None:
        if not self._url or time.monotonic() - self._checked_at < _PROBE_SECONDS:
            return
        if self._probe is not None and not self._probe.done():
            return
        try:
            self._probe = asyncio.get_running_loop().create_task(self._ping())
        except RuntimeError:  # no event loop yet (built at startup): the first call from the loop probes
            return

    async def _ping(self) -> None:
        try:
            async with httpx.AsyncClient(timeout=_PROBE_TIMEOUT) as client:
                response = await client.get(f"{self._url}/v1/ping")
            status = response.status_code
            self._record(None if status == 200 else f"SandboxFusion at {self._url} answered ping: HTTP {status}")
        except httpx.HTTPError as exc:
            self._record(f"SandboxFusion at {self._url} is not reachable: {exc.__class__.__name__}")

    async def ready(self) -> None:
        """Waits for the probe in flight (tests and startup use it to get a settled verdict)."""
        self._schedule_probe()
        if self._probe is not None:
            await self._probe

    def _record(self, verdict: str | None) -> None:
        self._verdict = verdict
        self._checked_at = time.monotonic()


def _capped(text: str, cap: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= cap:
        return text
    return data[:cap].decode("utf-8", errors="ignore") + f"\n[output truncated at {cap} bytes]"


def _decoded_size(content: str) -> int:
    try:
        return len(base64.b64decode(content))
    except (binascii.Error, ValueError):
        return 0
