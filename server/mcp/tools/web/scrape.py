"""The `scrape` tool: fetch one web page through the SSRF guard and return its readable text (and markdown).

HTML goes through trafilatura (main content and metadata, boilerplate such as navigation dropped) and markdownify
(that content as markdown); other text types come back as they are; anything else is refused.
"""

from __future__ import annotations

import asyncio
from typing import Any

import lxml.html
import markdownify
import trafilatura

from server.core.config import Settings
from server.core.db import utcnow
from server.core.ssrf import BlockedUrl, FetchError, FetchResult, SsrfPolicy, fetch
from server.mcp.tools.base import Tool, ToolContext, ToolError
from server.mcp.tools.web.search import timestamp

TEXT_PREVIEW_CHARS = 600
_HTML_TYPES = {"text/html", "application/xhtml+xml"}
_TEXT_TYPES = {"application/json", "application/xml", "application/javascript", "application/x-ndjson"}
_METADATA_FIELDS = ("title", "author", "description", "sitename", "date", "language", "image")

INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "url": {"type": "string", "minLength": 1, "description": "The http(s) URL of the page to read."},
        "includeMarkdown": {
            "type": "boolean",
            "description": "Also return the page's main content as markdown (default false).",
        },
    },
    "required": ["url"],
}

OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "source_url": {"type": "string", "description": "The URL asked for."},
        "text": {"type": "string", "description": "The page's readable text."},
        "text_preview": {"type": "string", "description": f"The first {TEXT_PREVIEW_CHARS} characters of text."},
        "markdown": {"type": "string", "description": "The main content as markdown, when includeMarkdown."},
        "metadata": {
            "type": "object",
            "description": "title, description, author, date, sitename, language, image when the page has them; "
            "final_url (after redirects), status and content_type always.",
        },
        "cache_status": {"type": "string", "description": "live: fetched just now"},
        "fetched_at": {"type": "string"},
    },
    "required": ["source_url", "text", "text_preview", "metadata", "cache_status", "fetched_at"],
}


def _decoded(result: FetchResult) -> str:
    try:
        return result.body.decode(result.charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python doesn't know
        return result.body.decode("utf-8", errors="replace")


def is_text(content_type: str) -> bool:
    return content_type.startswith("text/") or content_type in _TEXT_TYPES or content_type.endswith(("+json", "+xml"))


def extract_html(html: str | bytes, url: str, include_markdown: bool) -> tuple[str, str | None, dict[str, Any]]:
    """Text, markdown and metadata of an HTML page: `str` when the server named the charset, else the bytes, which
    trafilatura decodes by the page's own `<meta charset>` or by detection. CPU work: run it in a thread."""
    text = trafilatura.extract(html, url=url, output_format="txt", favor_recall=True)
    markdown = None
    if include_markdown:
        main_html = trafilatura.extract(
            html, url=url, output_format="html", include_links=True, include_formatting=True, favor_recall=True
        )
        if main_html is None:  # no main content found: the whole page
            tree = trafilatura.load_html(html)
            main_html = lxml.html.tostring(tree, encoding="unicode") if tree is not None else ""
        markdown = markdownify.markdownify(main_html, heading_style="ATX", strip=["img"]).strip()
    if not text:  # too little for trafilatura to call it content: keep every visible word
        text = trafilatura.html2txt(html)
    document = trafilatura.extract_metadata(html, default_url=url)
    found = document.as_dict() if document is not None else {}
    metadata = {name: found[name] for name in _METADATA_FIELDS if isinstance(found.get(name), str) and found[name]}
    return text or "", markdown, metadata


class ScrapeTool(Tool):
    name = "scrape"
    description = (
        "Read a web page: returns its main text (navigation and boilerplate removed), optionally markdown, and "
        "metadata such as the title. Only public http(s) addresses; at most 5 redirects."
    )
    input_schema = INPUT_SCHEMA
    output_schema = OUTPUT_SCHEMA

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._policy = SsrfPolicy.parse(settings.ssrf_allow_hosts)

    async def call(self, context: ToolContext, arguments: dict[str, Any]) -> dict[str, Any]:
        url = str(arguments["url"]).strip()
        include_markdown = bool(arguments.get("includeMarkdown", False))
        try:
            result = await fetch(
                url,
                policy=self._policy,
                max_bytes=self._settings.scrape_max_bytes,
                timeout_seconds=self._settings.scrape_timeout_seconds,
                headers={"accept": "text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.5"},
            )
        except BlockedUrl as refused:
            raise ToolError(f"scrape refused the URL: {refused.reason}") from None
        except FetchError as error:
            raise ToolError(f"scrape failed: {error}") from None
        if result.status >= 400:
            raise ToolError(f"scrape failed: {result.final_url} answered HTTP {result.status}")
        content_type = result.content_type or "text/html"
        metadata: dict[str, Any] = {
            "final_url": result.final_url, "status": result.status, "content_type": content_type
        }
        markdown: str | None
        if content_type in _HTML_TYPES:
            page = _decoded(result) if result.charset else result.body
            text, markdown, found = await asyncio.to_thread(extract_html, page, result.final_url, include_markdown)
            metadata.update(found)
        elif is_text(content_type):
            text = _decoded(result)
            markdown = text if include_markdown else None
        else:
            raise ToolError(f"scrape cannot read {content_type} content: only HTML and text pages")
        payload: dict[str, Any] = {
            "source_url": url,
            "text": text,
            "text_preview": text[:TEXT_PREVIEW_CHARS],
            "metadata": metadata,
            "cache_status": "live",
            "fetched_at": timestamp(utcnow()),
        }
        if markdown is not None:
            payload["markdown"] = markdown
        return payload
