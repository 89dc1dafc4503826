"""Hostile and broken uploads through Envoy (issue 5): every one a 400 in the OpenAI envelope saying why, never a
500, and never an out-of-memory: fake PNGs, 21 MiB files, SVG, zip, text, empty files, decompression bombs,
metadata-endpoint URLs, bad data URLs."""

from __future__ import annotations

import base64
from collections.abc import Callable

import httpx
import pytest

from tests.e2e.conftest import assert_error_envelope
from tests.support.conversations import fresh_user
from tests.support.media_images import PNG_HEADER_GARBAGE, SVG, data_url, png_bomb, zip_file
from tests.support.stack import Stack

MAX_BYTES = 20 * 1024 * 1024
Sender = Callable[[httpx.Client, dict[str, str], bytes], httpx.Response]
OVERSIZED = b"\x89PNG\r\n\x1a\n" + b"\0" * (21 * 1024 * 1024)


def post_file(http: httpx.Client, headers: dict[str, str], data: bytes) -> httpx.Response:
    return http.post("/v1/media", headers=headers, files={"file": ("upload", data, "image/png")})


def post_data_url(http: httpx.Client, headers: dict[str, str], data: bytes) -> httpx.Response:
    return http.post("/v1/media", headers=headers, json={"source": {"type": "data_url", "data_url": data_url(data)}})


@pytest.mark.parametrize("send", [post_file, post_data_url], ids=["multipart", "data_url"])
@pytest.mark.parametrize(
    "data,code,message",
    [
        (PNG_HEADER_GARBAGE, "invalid_image", "file is not a decodable png image"),
        (OVERSIZED, "file_too_large", f"file exceeds max size of {MAX_BYTES} bytes"),
        (SVG, "unsupported_mime_type", "unsupported mime type image/svg+xml"),
        (zip_file(), "unsupported_mime_type", "unsupported mime type application/zip"),
        (b"just some text\n", "unsupported_mime_type", "unsupported mime type text/plain"),
        (b"", "file_empty", "file is empty"),
        (png_bomb(), "image_too_large", "pixels"),
    ],
    ids=["png-header-garbage", "21MiB", "svg", "zip", "text", "empty", "png-bomb"],
)
def test_hostile_uploads_are_refused_with_the_reason(
    stack: Stack, http: httpx.Client, send: Sender, data: bytes, code: str, message: str
) -> None:
    headers = fresh_user(stack)
    response = send(http, headers, data)
    error = assert_error_envelope(response, 400, type="invalid_request_error", code=code)
    assert message in str(error["message"])
    assert http.get("/v1/media", headers=headers).json()["total"] == 0


def test_only_absurdly_large_bodies_are_refused_by_the_gateway(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    # The upload routes take about twice the image limit (base64 and multipart overhead), not more.
    response = http.post("/v1/media", headers={**headers, "Content-Type": "application/json"},
                         content=b"x" * (45 * 1024 * 1024))
    assert_error_envelope(response, 413, type="invalid_request_error", code="request_too_large")


def test_the_metadata_endpoint_is_never_fetched(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    for url in ("http://169.254.169.254/latest/meta-data/", "http://[::ffff:169.254.169.254]/", "http://0xa9fea9fe/"):
        response = http.post("/v1/media", headers=headers, json={"source": {"type": "remote_url", "url": url}})
        error = assert_error_envelope(response, 400, type="invalid_request_error", code="url_not_allowed",
                                      param="source.url")
        assert "metadata endpoint" in str(error["message"])
    response = http.post("/v1/media", headers=headers,
                         json={"source": {"type": "remote_url", "url": "http://127.0.0.1:1/x.png"}})
    assert_error_envelope(response, 400, type="invalid_request_error", code="url_not_allowed")
    response = http.post("/v1/media", headers=headers, json={"source": {"type": "remote_url", "url": "file:///etc/passwd"}})
    assert_error_envelope(response, 400, type="invalid_request_error", code="url_not_allowed")


@pytest.mark.parametrize(
    "body,param,message",
    [
        ({"source": {"type": "ftp"}}, "source.type", "unknown source type ftp"),
        ({}, "source", "'source' is required"),
        ({"source": {"type": "data_url"}}, "source.data_url", "required"),
        ({"source": {"type": "remote_url"}}, "source.url", "required"),
        ({"source": {"type": "data_url", "data_url": "data:image/png,abc"}}, "source.data_url", "base64"),
        ({"source": {"type": "data_url", "data_url": "data:image/png;base64,@@@"}}, "source.data_url", "base64"),
        ({"source": {"type": "data_url", "data_url": base64.b64encode(b"x").decode()}}, "source.data_url", "data:"),
    ],
)
def test_malformed_json_uploads(stack: Stack, http: httpx.Client, body: dict[str, object], param: str,
                                message: str) -> None:
    headers = fresh_user(stack)
    error = assert_error_envelope(http.post("/v1/media", headers=headers, json=body), 400,
                                  type="invalid_request_error", param=param)
    assert message in str(error["message"])


def test_malformed_multipart_uploads(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    no_file = http.post("/v1/media", headers=headers, files={"other": ("a.png", b"x", "image/png")})
    assert_error_envelope(no_file, 400, type="invalid_request_error", param="file")
    no_boundary = http.post("/v1/media", headers={**headers, "Content-Type": "multipart/form-data"}, content=b"x")
    assert_error_envelope(no_boundary, 400, type="invalid_request_error", param="file")
    invalid_json = http.post("/v1/media", headers={**headers, "Content-Type": "application/json"}, content=b"{nope")
    assert_error_envelope(invalid_json, 400, type="invalid_request_error", code="invalid_json")
