"""`python_exec`: run a Python snippet in a sandbox and return what it printed and the files it wrote.

Arguments and payload keep the original Jan Server's names (`code`, `language`, `session_id`, `approved` →
`stdout`, `stderr`, `duration_ms`, `session_id`, `artifacts`, `error`), plus `exit_code` and `timed_out`.
Every call is a fresh process in a fresh directory: `session_id` is only echoed (or made up), no state survives.
"""

from __future__ import annotations

import uuid
from typing import Any

from server.core.config import Settings
from server.mcp.tools.base import InvalidToolArguments, Tool, ToolContext, ToolError
from server.mcp.tools.python_exec.local import LocalSandbox
from server.mcp.tools.python_exec.sandboxfusion import SandboxFusionBackend

MAX_CODE_CHARS = 100_000

INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "code": {"type": "string", "description": "Python 3 source to run as a script (print what you want back)"},
        "language": {"type": "string", "enum": ["python"], "description": "only python (the default)"},
        "session_id": {
            "type": "string",
            "description": "a label echoed back; runs never share state (each starts fresh); generated if omitted",
        },
        "approved": {
            "type": "boolean",
            "description": "must be true when the server requires approval for code execution",
        },
    },
    "required": ["code"],
}

OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "stdout": {"type": "string", "description": "what the code printed, capped"},
        "stderr": {"type": "string", "description": "errors and tracebacks, capped"},
        "exit_code": {"type": ["integer", "null"], "description": "the process's exit status; null when stopped"},
        "duration_ms": {"type": "integer", "description": "wall-clock time of the run"},
        "timed_out": {"type": "boolean", "description": "the run hit the time limit and was killed"},
        "session_id": {"type": "string", "description": "the session_id given, or a generated one"},
        "artifacts": {
            "type": "array",
            "description": "regular files the code left in its working dir (deleted after the run)",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "description": "path relative to the working dir"},
                    "size": {"type": "integer", "description": "bytes"},
                    "url": {"type": "null", "description": "always null: files are not kept"},
                    "content_base64": {
                        "type": "string",
                        "description": "the content, while the per-run inline budget lasts; absent otherwise",
                    },
                },
                "required": ["name", "size"],
            },
        },
        "error": {"type": ["string", "null"], "description": "why the run was stopped or failed, if it was"},
    },
    "required": ["stdout", "stderr", "exit_code", "duration_ms", "timed_out", "session_id", "artifacts", "error"],
}


class PythonExecTool(Tool):
    name = "python_exec"
    input_schema = INPUT_SCHEMA
    output_schema = OUTPUT_SCHEMA

    def __init__(self, settings: Settings) -> None:
        self._require_approval = settings.python_exec_require_approval
        remote = settings.python_exec_backend == "sandboxfusion"
        self.backend: LocalSandbox | SandboxFusionBackend = (
            SandboxFusionBackend(settings) if remote else LocalSandbox(settings)
        )
        where = (
            "a remote SandboxFusion sandbox"
            if remote
            else "a sandbox with no network, a read-only filesystem and CPU, memory and time limits"
        )
        self.description = (
            f"Run Python 3 code in {where} and return stdout, stderr, the exit code and the files it wrote. "
            f"Each call starts from scratch (no state is kept between calls); limit "
            f"{settings.python_exec_timeout_seconds:g} s per run."
            + (" Calls must pass approved=true." if self._require_approval else "")
        )

    def unavailable_reason(self) -> str | None:
        return self.backend.unavailable_reason()

    async def call(self, context: ToolContext, arguments: dict[str, Any]) -> dict[str, Any]:
        code, session_id = _parse(arguments)
        if self._require_approval and arguments.get("approved") is not True:
            raise ToolError("python_exec requires approval on this server: call again with approved=true")
        reason = self.unavailable_reason()
        if reason is not None:
            raise ToolError(reason)
        result = await self.backend.run(code)
        return result.payload(session_id)


def _parse(arguments: dict[str, Any]) -> tuple[str, str]:
    code = arguments.get("code")
    if not isinstance(code, str) or not code.strip():
        raise InvalidToolArguments("code: a non-empty string is required")
    if len(code) > MAX_CODE_CHARS:
        raise InvalidToolArguments(f"code: at most {MAX_CODE_CHARS} characters")
    language = arguments.get("language", "python")
    if language != "python":
        raise InvalidToolArguments("language: only 'python' is supported")
    session_id = arguments.get("session_id")
    if session_id is not None and not isinstance(session_id, str):
        raise InvalidToolArguments("session_id: must be a string")
    approved = arguments.get("approved")
    if approved is not None and not isinstance(approved, bool):
        raise InvalidToolArguments("approved: must be a boolean")
    return code, session_id or f"pyexec_{uuid.uuid4().hex}"
