"""A loopback STAND-IN for a SandboxFusion server (bytedance/SandboxFusion), for testing python_exec's remote backend.

It speaks SandboxFusion's documented HTTP API — `POST /run_code` (RunCodeRequest → RunCodeResponse) and
`GET /v1/ping` ("pong") — but is not SandboxFusion and isolates nothing: it runs the code as a plain subprocess
of the test process. Python only. Each request is recorded in `requests` so tests can check what was sent.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class SandboxFusionStandIn:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> SandboxFusionStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def run_code(request: dict[str, Any]) -> dict[str, Any]:
    """RunCodeResponse for one RunCodeRequest, with SandboxFusion's status rules (Success / Failed / SandboxError)."""
    if request.get("language") != "python":
        return {"status": "SandboxError", "message": f"stand-in runs python only, not {request.get('language')}"}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sandboxfusion-standin-") as cwd:
        try:
            done = subprocess.run(
                [sys.executable, "-I", "-c", request["code"]],
                cwd=cwd,
                input=request.get("stdin") or "",
                capture_output=True,
                text=True,
                timeout=float(request.get("run_timeout", 10)),
                check=False,
            )
            run_result = {
                "status": "Finished",
                "execution_time": time.monotonic() - started,
                "return_code": done.returncode,
                "stdout": done.stdout,
                "stderr": done.stderr,
            }
        except subprocess.TimeoutExpired as exc:
            run_result = {
                "status": "TimeLimitExceeded",
                "execution_time": time.monotonic() - started,
                "return_code": None,
                "stdout": _text(exc.stdout),
                "stderr": _text(exc.stderr),
            }
    failed = run_result["status"] == "TimeLimitExceeded" or run_result["return_code"] != 0
    return {
        "status": "Failed" if failed else "Success",
        "message": "",
        "compile_result": None,
        "run_result": run_result,
        "executor_pod_name": None,
        "files": {},
    }


def _text(output: bytes | str | None) -> str:
    if isinstance(output, bytes):
        return output.decode("utf-8", errors="replace")
    return output or ""


def _handler(standin: SandboxFusionStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/v1/ping":
                self._send(200, "pong")
            else:
                self._send(404, {"detail": "Not Found"})

        def do_POST(self) -> None:
            if self.path != "/run_code":
                self._send(404, {"detail": "Not Found"})
                return
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if "code" not in body or "language" not in body:
                self._send(422, {"detail": [{"loc": ["body", "code"], "msg": "field required"}]})
                return
            standin.requests.append(body)
            self._send(200, run_code(body))

        def _send(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

    return Handler
