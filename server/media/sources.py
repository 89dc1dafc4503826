"""Reading an upload's bytes from the request: multipart/form-data (`file` field), or JSON naming a data URL or a
remote URL (fetched through the SSRF guard, size capped while streaming). Every failure is a 400 saying why."""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from server.core.errors import invalid_request
from server.core.json_body import optional_str, parse_object
from server.core.ssrf import BlockedUrl, FetchError, SsrfPolicy, fetch
from server.media.images import file_too_large

DATA_URL_TYPES = {"data_url", "datauri", "dataurl"}
REMOTE_URL_TYPES = {"remote_url", "remoteuri", "remote"}
MAX_FILENAME_CHARS = 255
_DATA_URL = re.compile(r"^data:([^,;]*)((?:;[^,;]*)*),", re.IGNORECASE)


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int
    fetch_timeout_seconds: float
    ssrf_policy: SsrfPolicy


async def read_upload(body: bytes, content_type: str, limits: UploadLimits) -> bytes:
    """The uploaded file's bytes, unchecked (images.inspect judges them)."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "multipart/form-data":
        return await asyncio.to_thread(multipart_file, body, content_type)
    payload = await asyncio.to_thread(parse_object, body)
    source = payload.get("source")
    if not isinstance(source, dict):
        raise invalid_request("'source' is required: {type: 'data_url'|'remote_url', data_url?, url?}",
                              param="source")
    optional_str(payload, "filename", max_length=MAX_FILENAME_CHARS)
    kind = optional_str(source, "type", param="source.type") or ""
    if not kind:
        raise invalid_request("'source.type' is required: 'data_url' or 'remote_url'", param="source.type")
    if kind.lower() in DATA_URL_TYPES:
        data_url = optional_str(source, "data_url", param="source.data_url")
        if not data_url:
            raise invalid_request("'source.data_url' is required for a data_url source", param="source.data_url")
        return await asyncio.to_thread(decode_data_url, data_url, limits.max_bytes)
    if kind.lower() in REMOTE_URL_TYPES:
        url = optional_str(source, "url", param="source.url")
        if not url:
            raise invalid_request("'source.url' is required for a remote_url source", param="source.url")
        return await fetch_remote(url, limits)
    raise invalid_request(f"unknown source type {kind}", param="source.type", code="unknown_source_type")


def decode_data_url(data_url: str, max_bytes: int) -> bytes:
    """The bytes of `data:<mime>;base64,<data>`. Only base64 data URLs are accepted, as by the original."""
    match = _DATA_URL.match(data_url)
    if match is None or "base64" not in [p.strip().lower() for p in match.group(2).split(";")]:
        raise invalid_request("'source.data_url' must look like data:<mime>;base64,<data>",
                              param="source.data_url", code="invalid_data_url")
    encoded = data_url[match.end():]
    # Refuse before decoding what would be too large anyway.
    if len(encoded) * 3 // 4 - encoded.count("=") > max_bytes:
        raise file_too_large(max_bytes)
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise invalid_request("'source.data_url' is not valid base64", param="source.data_url",
                              code="invalid_data_url") from None


async def fetch_remote(url: str, limits: UploadLimits) -> bytes:
    try:
        result = await fetch(url, policy=limits.ssrf_policy, max_bytes=limits.max_bytes,
                             timeout_seconds=limits.fetch_timeout_seconds)
    except BlockedUrl as blocked:
        raise invalid_request(str(blocked), param="source.url", code="url_not_allowed") from None
    except FetchError as error:
        raise invalid_request(str(error), param="source.url", code="fetch_failed") from None
    if result.status >= 400:
        raise invalid_request(f"fetching {url} failed with HTTP status {result.status}", param="source.url",
                              code="fetch_failed")
    return result.body


def multipart_file(body: bytes, content_type: str) -> bytes:
    """The content of the part named `file`. Blocking (parses the whole body): run it in a thread."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise invalid_request("multipart/form-data needs a boundary in its Content-Type", param="file")
    reader = _FilePartReader()
    parser = MultipartParser(boundary, reader.callbacks())
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as error:
        raise invalid_request(f"malformed multipart body: {error}", param="file") from None
    if reader.file is None:
        raise invalid_request("multipart uploads need the image in a 'file' field", param="file")
    return bytes(reader.file)


class _FilePartReader:
    """Collects the `file` part's bytes, ignoring other fields."""

    def __init__(self) -> None:
        self.file: bytearray | None = None
        self._header_name = b""
        self._header_value = b""
        self._is_file = False

    def callbacks(self) -> Any:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_part,
            "on_header_end": self._header_end,
            "on_part_data": self._part_data,
        }

    def _part_begin(self) -> None:
        self._is_file = False
        self._header_name = self._header_value = b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_part(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            _, options = parse_options_header(self._header_value)
            if options.get(b"name") == b"file" and self.file is None:
                self._is_file = True
                self.file = bytearray()
        self._header_name = self._header_value = b""

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file and self.file is not None:
            self.file += data[start:end]
