"""A loopback HTTP server that is a **stand-in** for the internet services the web tools talk to.

- SearXNG's JSON API: `GET /searxng/search?q=…&format=json[&pageno=&language=&time_range=]` answers the documented
  shape `{query, number_of_results, results: [{url, title, content, engine, engines, score, category}], answers,
  corrections, infoboxes, suggestions, unresponsive_engines}`; without `format=json` it answers 403 as SearXNG does
  when JSON output is not enabled. Configure the server with `JAN_SEARXNG_URL=<base_url>/searxng`.
- Serper's API: `POST /serper/search` with the `X-API-KEY` header and a JSON body `{q, gl?, hl?, num?, page?, tbs?,
  location?, autocorrect?}` answers `{searchParameters, organic: [{title, link, snippet, position}], credits}`; a
  wrong key gets 403 `{"message": "Unauthorized.", "statusCode": 403}`. Configure `JAN_SERPER_URL=<base_url>/serper`
  and `JAN_SERPER_API_KEY=<SERPER_KEY>`.
- A query containing `standin-fail` makes either provider answer 500.
- Pages for scrape: `/pages/article.html`, `/pages/cafe.html` (windows-1252, said only in a meta tag),
  `/pages/notes.txt`, `/pages/logo.png`, `/pages/large.html` (`LARGE_PAGE_BYTES` bytes), `/pages/missing` (404),
  `/redirect?to=<url>` (302), `/redirect-chain/<n>` (n redirects before the article), `/slow?seconds=` (answers
  late), `/echo` (what the request looked like: its Host header and the address it reached).

Every request is counted in `hits` (by path), so tests can tell whether the server called the provider again.
Binds 127.0.0.1 (or the given loopback address) on a free port in a background thread; `stop()` shuts it down.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

SERPER_KEY = "standin-serper-key"
LARGE_PAGE_BYTES = 3 * 1024 * 1024
ARTICLE_TITLE = "Tidal Energy in the Bay of Fundy"
ARTICLE_HTML = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{ARTICLE_TITLE}</title>
<meta name="description" content="How the highest tides on Earth could power Nova Scotia.">
<meta name="author" content="Ada Tester">
<script>window.tracking = "should never appear in text";</script>
<style>body {{ color: black; }}</style></head>
<body><nav><a href="/">Home</a> | <a href="/about">About</a></nav>
<article><h1>{ARTICLE_TITLE}</h1>
<p>The Bay of Fundy has the highest tides in the world: twice a day, one hundred billion tonnes of seawater flow
in and out of the bay, more than the combined flow of all the world's freshwater rivers.</p>
<h2>Turbines on the seabed</h2>
<p>Engineers have anchored <strong>underwater turbines</strong> in the Minas Passage, where currents exceed five
metres per second. Each turbine can power hundreds of homes, and the tides are perfectly predictable.</p>
<ul><li>Predictable output</li><li>No visual impact</li></ul>
<p>Read the <a href="https://example.org/fundy-report">full report</a> for the environmental monitoring results.</p>
</article>
<footer>Copyright 2026 Stand-in Press</footer></body></html>
"""
# Declares its charset only in the page itself, as many older sites do.
CAFE_HTML = (
    '<html><head><meta charset="windows-1252"><title>Caf\xe9 cr\xe8me</title></head>'
    "<body><p>Un caf\xe9 tr\xe8s cr\xe9meux.</p></body></html>"
).encode("cp1252")
NOTES_TEXT = "Plain notes.\nLine two of the plain text file.\n"
PNG_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


class _Handler(BaseHTTPRequestHandler):
    server: _StandinHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        self.server.hits[url.path] += 1
        if url.path == "/searxng/search":
            self._searxng(query)
        elif url.path == "/pages/article.html":
            self._send(200, ARTICLE_HTML.encode(), "text/html; charset=utf-8")
        elif url.path == "/pages/cafe.html":
            self._send(200, CAFE_HTML, "text/html")
        elif url.path == "/pages/notes.txt":
            self._send(200, NOTES_TEXT.encode(), "text/plain; charset=utf-8")
        elif url.path == "/pages/logo.png":
            self._send(200, PNG_BYTES, "image/png")
        elif url.path == "/pages/large.html":
            self._send(200, b"<p>" + b"x" * LARGE_PAGE_BYTES + b"</p>", "text/html")
        elif url.path == "/redirect":
            self._send(302, b"", "text/plain", {"Location": query.get("to", "/")})
        elif url.path.startswith("/redirect-chain/"):
            remaining = int(url.path.rsplit("/", 1)[1])
            target = f"/redirect-chain/{remaining - 1}" if remaining > 1 else "/pages/article.html"
            self._send(302, b"", "text/plain", {"Location": target})
        elif url.path == "/slow":
            time.sleep(float(query.get("seconds", "2")))
            self._send(200, b"slow", "text/plain")
        elif url.path == "/echo":
            self._json(200, {"host": self.headers.get("Host"), "reached": self.connection.getsockname()[0]})
        else:
            self._send(404, b"not found", "text/plain")

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        self.server.hits[url.path] += 1
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        if url.path != "/serper/search":
            self._send(404, b"not found", "text/plain")
        elif self.headers.get("X-API-KEY") != SERPER_KEY:
            self._json(403, {"message": "Unauthorized.", "statusCode": 403})
        else:
            self._serper(body)

    def _searxng(self, query: dict[str, str]) -> None:
        if query.get("format") != "json":
            self._send(403, b"Forbidden", "text/html")
            return
        q = query.get("q", "")
        if "standin-fail" in q:
            self._send(500, b"Internal Server Error", "text/html")
            return
        page = int(query.get("pageno", "1"))
        results = [
            {
                "url": f"https://searx.example/{page}/{index}",
                "title": f"SearXNG result {index} for {q}",
                "content": f"Snippet {index} about {q}.",
                "engine": "duckduckgo",
                "engines": ["duckduckgo", "brave"],
                "score": 1.0 / index,
                "category": "general",
            }
            for index in range(1, 13)
        ]
        self._json(200, {
            "query": q, "number_of_results": len(results), "results": results, "answers": [], "corrections": [],
            "infoboxes": [], "suggestions": [], "unresponsive_engines": [],
            "standin_params": query,
        })

    def _serper(self, body: dict[str, Any]) -> None:
        q = str(body.get("q", ""))
        if "standin-fail" in q:
            self._json(500, {"message": "Internal error", "statusCode": 500})
            return
        num = int(body.get("num", 10))
        organic = [
            {
                "title": f"Serper result {index} for {q}",
                "link": f"https://serper.example/{body.get('page', 1)}/{index}",
                "snippet": f"Serper snippet {index} about {q}.",
                "position": index,
            }
            for index in range(1, num + 1)
        ]
        parameters = {key: body[key] for key in ("q", "gl", "hl", "num", "page", "tbs", "location") if key in body}
        self._json(200, {
            "searchParameters": {**parameters, "type": "search", "engine": "google"},
            "organic": organic,
            "credits": 1,
        })


class _StandinHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    hits: Counter[str]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up early (size cap, timeout tests) are expected; anything else is printed.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class SearchStandin:
    """Start with `start()`; `base_url` is `http://<host>:<port>`."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._server = _StandinHTTPServer((host, 0), _Handler)
        self._server.hits = Counter()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def hits(self) -> Counter[str]:
        return self._server.hits

    def start(self) -> SearchStandin:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
