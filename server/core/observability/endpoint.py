"""`GET /metrics` for Prometheus, served on the event loop with asyncio streams (no web framework).

Rendering the registry is cheap (microseconds per metric, and the database pool is read from memory), so it runs
on the loop; a slow or silent client only holds its own connection, and a request that is not done within
REQUEST_TIMEOUT_SECONDS is dropped.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CONTENT_TYPE_LATEST

from server.core.observability.metrics import exposition

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_SECONDS = 10.0
MAX_HEADER_BYTES = 16 * 1024


class MetricsEndpoint:
    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}/metrics"

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._serve, self._host, self._port, limit=MAX_HEADER_BYTES)
        except OSError as error:
            raise RuntimeError(
                f"cannot serve metrics on {self._host}:{self._port} ({error.strerror}); set JAN_METRICS_PORT to a "
                "free port, or 0 for no metrics endpoint"
            ) from None
        log.info("Prometheus metrics on %s", self.url)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_SECONDS)
            method, _, rest = head.partition(b" ")
            path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
            if method not in (b"GET", b"HEAD"):
                status, content_type, body = "405 Method Not Allowed", "text/plain", b"GET /metrics\n"
            elif path != b"/metrics":
                status, content_type, body = "404 Not Found", "text/plain", b"GET /metrics\n"
            else:
                status, content_type, body = "200 OK", CONTENT_TYPE_LATEST, exposition()
            header = (
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
            writer.write(header if method == b"HEAD" else header + body)
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT_SECONDS)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # a client that went away or sent no request: nothing to answer
        finally:
            writer.close()
