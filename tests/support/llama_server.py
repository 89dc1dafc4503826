"""`python -m llama_cpp.server` (llama-cpp-python's own OpenAI-compatible server) on the bundled SmolLM2 GGUF: a real
third-party upstream for the openai backend's tests and bench. Needs the `llama-cpp-python[server]` extra."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass

from server.core.config import bundled_smollm2_path
from tests.support.ports import free_port


@dataclass
class LlamaServer:
    port: int
    process: subprocess.Popen[str]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_llama_server(threads: int = 2, timeout: float = 60, *extra: str, api_key: str = "") -> LlamaServer:
    """Started and answering `GET /v1/models` (requiring `api_key` when one is given). `--interrupt_requests
    False`: by default the server ends a running stream with an empty 200 when another request arrives
    (inference.md §4)."""
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", bundled_smollm2_path(), "--host", "127.0.0.1",
        "--port", str(port), "--n_ctx", "2048", "--n_threads", str(threads), "--n_threads_batch", str(threads),
        "--interrupt_requests", "False", "--verbose", "False", *extra,
    ]
    if api_key:
        command += ["--api_key", api_key]
    log = tempfile.TemporaryFile("w+")  # not a pipe: nobody reads it while the server runs
    server = LlamaServer(port, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            log.seek(0)
            raise RuntimeError("llama_cpp.server exited:\n" + log.read()[-4000:])
        try:
            probe = urllib.request.Request(server.base_url + "/models", headers={"Authorization": f"Bearer {api_key}"})
            with opener.open(probe, timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError("llama_cpp.server did not become ready")
        time.sleep(0.2)
