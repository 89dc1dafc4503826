"""The whole Jan Server (gRPC services + Envoy) as a user runs it: `jan-server run` in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
# Test stacks serve a whole suite from one IP and a few users: limits far above what it sends, unless a test
# asks for small ones (tests/e2e/test_rate_limits.py).
HIGH_PER_MINUTE = 1_000_000
HIGH_LIMITS = {
    "rate_limit_user_per_minute": str(HIGH_PER_MINUTE),
    "rate_limit_ip_per_minute": str(HIGH_PER_MINUTE),
    "api_key_tiers": json.dumps({
        "free": {"per_minute": HIGH_PER_MINUTE, "per_day": HIGH_PER_MINUTE},
        "pro": {"per_minute": HIGH_PER_MINUTE, "per_day": HIGH_PER_MINUTE},
        "enterprise": {"per_minute": HIGH_PER_MINUTE},
    }),
}


@dataclass
class Stack:
    """`command`: the `jan-server` subcommand and its arguments (`run`, or `serve --service ...`)."""

    env: dict[str, str]
    command: tuple[str, ...] = ("run",)
    process: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.env['JAN_PORT']}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.env['JAN_GRPC_PORT']}"

    @property
    def data_dir(self) -> Path:
        return Path(self.env["JAN_DATA_DIR"])

    def start(self, timeout: float = 120) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "server.cli", *self.command],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready = threading.Event()

        def pump() -> None:
            assert self.process is not None and self.process.stdout is not None
            for line in self.process.stdout:
                self.output.append(line)
                if "listening on" in line:
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("jan-server did not start:\n" + "".join(self.output[-60:]))

    def stop(self, timeout: float = 20) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def make_stack(database_url: str | None = None, **settings: str) -> Stack:
    data_dir = tempfile.mkdtemp(prefix="jan-data-")
    env = {
        **os.environ,
        "JAN_DATA_DIR": data_dir,
        "JAN_PORT": str(free_port()),
        "JAN_GRPC_PORT": str(free_port()),
        "JAN_ENVOY_ADMIN_PORT": str(free_port()),
        "JAN_METRICS_PORT": str(free_port()),
        "JAN_LOG_LEVEL": "WARNING",
    }
    if database_url:
        env["JAN_DATABASE_URL"] = database_url
    env.update({f"JAN_{key.upper()}": value for key, value in {**HIGH_LIMITS, **settings}.items()})
    return Stack(env=env)
