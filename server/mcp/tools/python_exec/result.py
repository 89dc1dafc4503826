"""What one run produced, whichever backend ran it; `payload` is the tool's result (the original's fields)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunResult:
    stdout: str
    stderr: str
    exit_code: int | None
    duration_ms: int
    timed_out: bool
    error: str | None = None
    artifacts: list[dict[str, Any]] = field(default_factory=list)

    def payload(self, session_id: str) -> dict[str, Any]:
        return {
            "stdout": self.stdout,
            "stderr": self.stderr,
            "exit_code": self.exit_code,
            "duration_ms": self.duration_ms,
            "timed_out": self.timed_out,
            "session_id": session_id,
            "artifacts": self.artifacts,
            "error": self.error,
        }
