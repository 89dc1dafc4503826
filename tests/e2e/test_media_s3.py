"""The Media API on S3 storage (a real S3-speaking moto server) through Envoy, and remote-URL uploads from a
loopback server this stack's SSRF allow-list admits (issue 5). One module-scoped stack on SQLite."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.e2e.conftest import assert_error_envelope
from tests.support.conversations import fresh_user
from tests.support.media_images import SVG, image_bytes, unique_png
from tests.support.s3 import MotoS3Server
from tests.support.stack import Stack, make_stack

BUCKET = "jan-media-test"
REMOTE_PNG = image_bytes("PNG", size=(40, 30), color=(1, 200, 3))
# What the loopback file server serves: /large.png is 3 KiB over the stack's limit; anything else is a 404.
REMOTE_FILES = {"/image.png": (REMOTE_PNG, "image/png"), "/image.svg": (SVG, "image/svg+xml"),
                "/large.png": (b"\x89PNG\r\n\x1a\n" + b"\0" * (64 * 1024 + 3000), "image/png")}


class _Files(BaseHTTPRequestHandler):
    """Serves REMOTE_FILES."""

    def do_GET(self) -> None:
        found = REMOTE_FILES.get(self.path)
        if found is None:
            self.send_error(404)
            return
        body, mime = found
        self.send_response(200)
        self.send_header("Content-Type", mime)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def files() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoS3Server]:
    server = MotoS3Server()
    server.start()
    server.create_bucket(BUCKET)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def s3_stack(moto: MotoS3Server, files: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    database = tmp_path_factory.mktemp("media-s3") / "jan.db"
    port = files.rsplit(":", 1)[1]
    stack = make_stack(
        f"sqlite+aiosqlite:///{database}",
        ssrf_allow_hosts=json.dumps([f"127.0.0.1:{port}"]),
        media_max_bytes=str(64 * 1024),
        **moto.settings(BUCKET),
    )
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
def http(s3_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=s3_stack.base_url, timeout=60) as client:
        yield client


def test_upload_answers_an_s3_presigned_url_that_downloads_the_exact_bytes(
    s3_stack: Stack, moto: MotoS3Server, http: httpx.Client
) -> None:
    headers = fresh_user(s3_stack)
    data = unique_png()
    response = http.post("/v1/media", headers=headers, files={"file": ("a.png", data, "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["presigned_url"].startswith(f"{moto.endpoint}/{BUCKET}/images/{body['sha256']}.png?")
    download = httpx.get(body["presigned_url"])  # plain HTTP, no credentials
    assert download.status_code == 200
    assert download.content == data
    assert download.headers["content-type"] == "image/png"
    through_envoy = http.get(f"/v1/media/{body['id']}", headers=headers)
    assert through_envoy.content == data and through_envoy.headers["content-type"] == "image/png"
    presigned = http.get(f"/v1/media/{body['id']}/presign", headers=headers).json()["url"]
    assert httpx.get(presigned).content == data


def test_prepare_put_to_s3_complete(s3_stack: Stack, moto: MotoS3Server, http: httpx.Client) -> None:
    headers = fresh_user(s3_stack)
    data = unique_png()
    upload = http.post("/v1/media/prepare-upload", headers=headers, json={"mime_type": "image/png"}).json()
    assert upload["upload_url"].startswith(f"{moto.endpoint}/{BUCKET}/uploads/{upload['id']}?")
    put = httpx.put(upload["upload_url"], content=data, headers={"Content-Type": "image/png"})
    assert put.status_code == 200, put.text
    assert_error_envelope(http.get(f"/v1/media/{upload['id']}", headers=headers), 404, type="not_found_error")
    completed = http.post(f"/v1/media/{upload['id']}/complete", headers=headers)
    assert completed.status_code == 200, completed.text
    body = completed.json()
    assert body["id"] == upload["id"] and body["sha256"] == hashlib.sha256(data).hexdigest()
    assert httpx.get(body["presigned_url"]).content == data
    # The staging object is gone; the bytes live under their content key.
    assert f"uploads/{upload['id']}" not in moto.object_keys(BUCKET, "uploads/")
    assert f"images/{body['sha256']}.png" in moto.object_keys(BUCKET, "images/")


def test_complete_refuses_an_oversized_or_foreign_object(s3_stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(s3_stack)
    upload = http.post("/v1/media/prepare-upload", headers=headers, json={"mime_type": "image/png"}).json()
    # A presigned PUT cannot bound the size: completion does.
    httpx.put(upload["upload_url"], content=b"\x89PNG\r\n\x1a\n" + b"\0" * (70 * 1024),
              headers={"Content-Type": "image/png"})
    error = assert_error_envelope(http.post(f"/v1/media/{upload['id']}/complete", headers=headers), 400,
                                  type="invalid_request_error", code="file_too_large")
    assert error["message"] == f"file exceeds max size of {64 * 1024} bytes"
    svg = http.post("/v1/media/prepare-upload", headers=headers, json={"mime_type": "image/png"}).json()
    httpx.put(svg["upload_url"], content=SVG, headers={"Content-Type": "image/png"})
    assert_error_envelope(http.post(f"/v1/media/{svg['id']}/complete", headers=headers), 400,
                          type="invalid_request_error", code="unsupported_mime_type")


def test_the_same_bytes_of_two_users_are_stored_once_and_outlive_one_deletion(
    s3_stack: Stack, moto: MotoS3Server, http: httpx.Client
) -> None:
    alice, bob = fresh_user(s3_stack), fresh_user(s3_stack)
    data = unique_png()
    first = http.post("/v1/media", headers=alice, files={"file": ("a.png", data, "image/png")}).json()
    second = http.post("/v1/media", headers=bob, files={"file": ("b.png", data, "image/png")}).json()
    assert first["id"] != second["id"] and first["sha256"] == second["sha256"]
    key = f"images/{first['sha256']}.png"
    assert moto.object_keys(BUCKET, key) == [key]
    assert http.delete(f"/v1/media/{first['id']}", headers=alice).status_code == 200
    assert moto.object_keys(BUCKET, key) == [key]
    assert http.get(f"/v1/media/{second['id']}", headers=bob).content == data
    assert http.delete(f"/v1/media/{second['id']}", headers=bob).status_code == 200
    assert moto.object_keys(BUCKET, key) == []


def test_remote_url_upload_from_an_allowed_host(s3_stack: Stack, files: str, http: httpx.Client) -> None:
    headers = fresh_user(s3_stack)
    for source_type in ("remote_url", "remote"):
        response = http.post("/v1/media", headers=headers,
                             json={"source": {"type": source_type, "url": f"{files}/image.png"}})
        assert response.status_code == 200, response.text
        assert response.json()["sha256"] == hashlib.sha256(REMOTE_PNG).hexdigest()
    assert response.json()["deduped"] is True


@pytest.mark.parametrize(
    "path,code,message",
    [
        ("/missing", "fetch_failed", "HTTP status 404"),
        ("/large.png", "fetch_failed", f"larger than the {64 * 1024} byte limit"),
        ("/image.svg", "unsupported_mime_type", "unsupported mime type image/svg+xml"),
    ],
)
def test_remote_url_failures(s3_stack: Stack, files: str, http: httpx.Client, path: str, code: str,
                             message: str) -> None:
    headers = fresh_user(s3_stack)
    response = http.post("/v1/media", headers=headers, json={"source": {"type": "remote_url", "url": files + path}})
    error = assert_error_envelope(response, 400, type="invalid_request_error", code=code)
    assert message in str(error["message"])


def test_the_allow_list_admits_only_the_named_port(s3_stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(s3_stack)
    response = http.post("/v1/media", headers=headers,
                         json={"source": {"type": "remote_url", "url": f"{s3_stack.base_url}/healthz"}})
    assert_error_envelope(response, 400, type="invalid_request_error", code="url_not_allowed")
