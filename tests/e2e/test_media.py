"""The Media API through Envoy on local storage (issue 5): both upload forms, dedupe per user, downloads,
listing, deleting, resolve in both formats, presigned URLs (local HMAC-signed), prepare-upload -> PUT -> complete,
and two-user isolation. Hostile inputs: test_media_hostile.py; S3 and remote URLs: test_media_s3.py."""

from __future__ import annotations

import base64
import hashlib
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import assert_error_envelope
from tests.support.conversations import fresh_user
from tests.support.media_images import data_url, image_bytes, noise_png, unique_png
from tests.support.stack import Stack

MEDIA_ID = re.compile(r"^jan_[0-9a-hjkmnp-tv-z]{26}$")
MEDIA_KEYS = {"id", "object", "mime", "bytes", "sha256", "deduped", "presigned_url", "created_at"}


def upload_json(http: httpx.Client, headers: dict[str, str], data: bytes, mime: str = "image/png",
                path: str = "/v1/media") -> dict[str, Any]:
    response = http.post(path, headers=headers, json={"source": {"type": "data_url", "data_url": data_url(data, mime)}})
    assert response.status_code == 200, response.text
    return dict(response.json())


def upload_multipart(http: httpx.Client, headers: dict[str, str], data: bytes,
                     path: str = "/v1/media/upload") -> dict[str, Any]:
    response = http.post(path, headers=headers, files={"file": ("picture.bin", data, "application/octet-stream")})
    assert response.status_code == 200, response.text
    return dict(response.json())


# ---- uploads -------------------------------------------------------------------------------------------------


def test_json_data_url_upload_answers_the_media_object(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    data = unique_png()
    before = int(time.time())
    body = upload_json(http, headers, data)
    assert set(body) == MEDIA_KEYS
    assert MEDIA_ID.match(body["id"])
    assert body["object"] == "media"
    assert body["mime"] == "image/png"
    assert body["bytes"] == len(data)
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["deduped"] is False
    assert before - 1 <= body["created_at"] <= time.time() + 1
    # The presigned URL needs no credentials.
    download = httpx.get(body["presigned_url"])
    assert download.status_code == 200
    assert download.content == data


@pytest.mark.parametrize("path", ["/v1/media", "/v1/media/upload", "/media/v1/media"])
def test_multipart_upload_on_every_path_recognises_the_type_from_the_bytes(
    stack: Stack, http: httpx.Client, path: str
) -> None:
    headers = fresh_user(stack)
    data = image_bytes("JPEG", color=(10, 20, 30))
    body = upload_multipart(http, headers, data, path=path)
    assert body["mime"] == "image/jpeg"  # declared application/octet-stream: the bytes decide
    assert body["bytes"] == len(data)


@pytest.mark.parametrize("fmt,mime", [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp"),
                                      ("GIF", "image/gif"), ("BMP", "image/bmp"), ("TIFF", "image/tiff")])
def test_every_accepted_image_type_is_stored_and_served_with_its_content_type(
    stack: Stack, http: httpx.Client, fmt: str, mime: str
) -> None:
    headers = fresh_user(stack)
    data = image_bytes(fmt, size=(8, 8))
    body = upload_json(http, headers, data, mime="application/octet-stream")
    assert body["mime"] == mime
    content = http.get(f"/v1/media/{body['id']}", headers=headers)
    assert content.status_code == 200
    assert content.headers["content-type"] == mime
    assert content.content == data


def test_a_15_mib_image_is_accepted_as_base64_json_and_downloaded_whole(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    data = noise_png(15 * 1024 * 1024)
    assert len(data) > 14 * 1024 * 1024
    body = upload_json(http, headers, data)  # about 20 MiB of JSON: above the gateway's usual 8 MiB body cap
    assert body["bytes"] == len(data)
    with http.stream("GET", f"/v1/media/{body['id']}", headers=headers) as response:
        assert response.status_code == 200
        received = b"".join(response.iter_bytes())
    assert hashlib.sha256(received).hexdigest() == body["sha256"]


# ---- dedupe --------------------------------------------------------------------------------------------------


def test_the_same_user_uploading_the_same_bytes_gets_the_same_id(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    data = unique_png()
    first = upload_json(http, headers, data)
    second = upload_multipart(http, headers, data)
    assert second["id"] == first["id"]
    assert second["deduped"] is True
    assert second["sha256"] == first["sha256"]
    listed = http.get("/v1/media", headers=headers).json()
    assert [item["id"] for item in listed["data"]] == [first["id"]]


def test_another_user_uploading_the_same_bytes_gets_an_id_of_their_own(stack: Stack, http: httpx.Client) -> None:
    alice, bob = fresh_user(stack), fresh_user(stack)
    data = unique_png()
    first = upload_json(http, alice, data)
    second = upload_json(http, bob, data)
    assert second["id"] != first["id"]
    assert second["deduped"] is False
    assert second["sha256"] == first["sha256"]
    # The bytes may be shared underneath: deleting Alice's media leaves Bob's intact.
    assert http.delete(f"/v1/media/{first['id']}", headers=alice).status_code == 200
    assert http.get(f"/v1/media/{second['id']}", headers=bob).content == data
    assert httpx.get(second["presigned_url"]).content == data


def test_concurrent_uploads_of_the_same_bytes_by_one_user_make_one_media(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    data = unique_png()
    with ThreadPoolExecutor(6) as pool:
        bodies = list(pool.map(lambda _: upload_multipart(http, headers, data), range(6)))
    assert len({body["id"] for body in bodies}) == 1
    assert sorted(body["deduped"] for body in bodies) == [False] + [True] * 5
    assert http.get("/v1/media", headers=headers).json()["total"] == 1


# ---- reading, listing, deleting ------------------------------------------------------------------------------


def test_get_answers_the_bytes_on_both_paths(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    data = unique_png()
    media_id = upload_json(http, headers, data)["id"]
    for path in (f"/v1/media/{media_id}", f"/media/v1/media/{media_id}"):
        response = http.get(path, headers=headers)
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        assert response.content == data


def test_list_pages_newest_first_and_delete_removes(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    ids = [upload_json(http, headers, unique_png())["id"] for _ in range(3)]
    page = http.get("/v1/media", headers=headers, params={"limit": 2}).json()
    assert page["object"] == "list"
    assert [item["id"] for item in page["data"]] == ids[::-1][:2]
    assert page["has_more"] is True
    assert page["total"] == page["total_count"] == 3
    assert all("presigned_url" not in item and item["deduped"] is False for item in page["data"])
    rest = http.get("/v1/media", headers=headers, params={"limit": 2, "after": page["last_id"]}).json()
    assert [item["id"] for item in rest["data"]] == [ids[0]]
    assert rest["has_more"] is False
    ascending = http.get("/v1/media", headers=headers, params={"order": "asc"}).json()
    assert [item["id"] for item in ascending["data"]] == ids

    deleted = http.delete(f"/v1/media/{ids[1]}", headers=headers)
    assert deleted.status_code == 200
    assert deleted.json() == {"id": ids[1], "object": "media", "deleted": True}
    assert_error_envelope(http.get(f"/v1/media/{ids[1]}", headers=headers), 404, type="not_found_error")
    assert_error_envelope(http.delete(f"/v1/media/{ids[1]}", headers=headers), 404, type="not_found_error")
    assert http.get("/v1/media", headers=headers).json()["total"] == 2


def test_malformed_and_unknown_ids(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    assert_error_envelope(http.get("/v1/media/nope", headers=headers), 400, type="invalid_request_error",
                          code="invalid_id", param="media_id")
    unknown = "jan_01jz0000000000000000000000"
    error = assert_error_envelope(http.get(f"/v1/media/{unknown}", headers=headers), 404, type="not_found_error",
                                  code="media_not_found")
    assert unknown in str(error["message"])


def test_every_media_route_needs_credentials(stack: Stack, http: httpx.Client) -> None:
    for method, path in [("GET", "/v1/media"), ("POST", "/v1/media"), ("POST", "/v1/media/resolve"),
                         ("GET", "/v1/media/jan_01jz0000000000000000000000")]:
        assert_error_envelope(http.request(method, path), 401, type="auth_error")


# ---- resolve -------------------------------------------------------------------------------------------------


def test_resolve_replaces_placeholders_with_presigned_urls_by_default(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    data = unique_png()
    media_id = upload_json(http, headers, data)["id"]
    placeholder = f"data:image/png;{media_id}"
    payload = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": f"look: {placeholder} and again {placeholder}"},
        {"type": "image_url", "image_url": {"url": placeholder}},
    ]}], "n": 1, "flag": True, "nothing": None}
    for path in ("/v1/media/resolve", "/media/v1/media/resolve"):
        response = http.post(path, headers=headers, json={"payload": payload})
        assert response.status_code == 200, response.text
        resolved = response.json()["payload"]
        url = resolved["messages"][0]["content"][1]["image_url"]["url"]
        assert url.startswith("http") and media_id in url
        assert "data:image/png;jan_" not in str(resolved)
        assert resolved["n"] == 1 and resolved["flag"] is True and resolved["nothing"] is None
        assert httpx.get(url).content == data


def test_resolve_to_data_urls(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    data = unique_png()
    media_id = upload_json(http, headers, data)["id"]
    response = http.post("/v1/media/resolve", headers=headers,
                         json={"payload": [f"data:image/png;{media_id}"], "format": "data_url"})
    assert response.status_code == 200, response.text
    [resolved] = response.json()["payload"]
    assert resolved == "data:image/png;base64," + base64.b64encode(data).decode()


def test_resolve_without_placeholders_answers_the_payload_unchanged(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    payload = {"text": "data:image/png;base64,AAAA", "list": [1, 2.5, "x"], "nested": {"a": {}}}
    response = http.post("/v1/media/resolve", headers=headers, json={"payload": payload})
    assert response.status_code == 200
    assert response.json() == {"payload": payload}


def test_resolve_refuses_unknown_ids_naming_them(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    unknown = "jan_01jz0000000000000000000000"
    response = http.post("/v1/media/resolve", headers=headers,
                         json={"payload": {"messages": [{"content": f"data:image/png;{unknown}"}]}})
    error = assert_error_envelope(response, 400, type="invalid_request_error", code="unknown_media_id",
                                  param="payload.messages[0].content")
    assert error["message"] == f"unknown media id {unknown}"
    assert_error_envelope(http.post("/v1/media/resolve", headers=headers, json={}), 400,
                          type="invalid_request_error", param="payload")
    assert_error_envelope(http.post("/v1/media/resolve", headers=headers, json={"payload": 1, "format": "b64"}),
                          400, type="invalid_request_error", param="format")


# ---- presigned URLs ------------------------------------------------------------------------------------------


def test_presigned_urls_on_both_paths_download_without_credentials(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    data = unique_png()
    media_id = upload_json(http, headers, data)["id"]
    seed = http.post("/v1/media/presigned-url", headers=headers, json={"id": media_id, "expires_in": 120})
    assert seed.status_code == 200, seed.text
    assert seed.json()["id"] == media_id and seed.json()["expires_in"] == 120
    original = http.get(f"/v1/media/{media_id}/presign", headers=headers)
    assert original.status_code == 200
    assert original.json()["expires_in"] == 300
    for url in (seed.json()["url"], original.json()["url"]):
        response = httpx.get(url)
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        assert response.content == data


def test_tampered_and_expired_signed_urls_are_refused(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    media_id = upload_json(http, headers, unique_png())["id"]
    other_id = upload_json(http, headers, unique_png())["id"]
    url = http.get(f"/v1/media/{media_id}/presign", headers=headers).json()["url"]
    signature = re.search(r"signature=([0-9a-f]+)", url).group(1)  # type: ignore[union-attr]
    expires = int(re.search(r"expires=(\d+)", url).group(1))  # type: ignore[union-attr]
    tampered = [
        url.replace(signature, ("0" if signature[0] != "0" else "1") + signature[1:]),
        url.replace(f"expires={expires}", f"expires={expires + 3600}"),
        url.replace(media_id, other_id),
        url.split("?")[0],
    ]
    for bad in tampered:
        assert_error_envelope(httpx.get(bad), 403, type="permission_error")
    # A download URL cannot be used to upload.
    assert_error_envelope(httpx.put(url, content=b"x", headers={"Content-Type": "image/png"}), 403,
                          type="permission_error", code="invalid_signature")
    short = http.get(f"/v1/media/{media_id}/presign", headers=headers, params={"expires_in": 1}).json()["url"]
    time.sleep(2.1)
    assert_error_envelope(httpx.get(short), 403, type="permission_error", code="url_expired")


def test_presign_checks_expires_in(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    media_id = upload_json(http, headers, unique_png())["id"]
    response = http.post("/v1/media/presigned-url", headers=headers, json={"id": media_id, "expires_in": 0})
    assert_error_envelope(response, 400, type="invalid_request_error", param="expires_in")
    assert_error_envelope(http.post("/v1/media/presigned-url", headers=headers, json={}), 400,
                          type="invalid_request_error", param="id")


# ---- prepare-upload -> PUT -> complete -----------------------------------------------------------------------


def test_prepare_put_complete_makes_the_id_usable(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    data = unique_png()
    prepared = http.post("/v1/media/prepare-upload", headers=headers,
                         json={"mime_type": "image/png", "bytes": len(data)})
    assert prepared.status_code == 200, prepared.text
    upload = prepared.json()
    assert set(upload) == {"id", "upload_url", "mime_type", "expires_in"}
    assert MEDIA_ID.match(upload["id"]) and upload["mime_type"] == "image/png"
    media_id = upload["id"]
    # Pending: not usable anywhere yet.
    assert_error_envelope(http.get(f"/v1/media/{media_id}", headers=headers), 404, type="not_found_error")
    assert_error_envelope(http.get(f"/v1/media/{media_id}/presign", headers=headers), 404, type="not_found_error")
    assert_error_envelope(http.post("/v1/media/resolve", headers=headers,
                                    json={"payload": f"data:image/png;{media_id}"}), 400,
                          type="invalid_request_error", code="unknown_media_id")
    assert http.get("/v1/media", headers=headers).json()["total"] == 0
    assert_error_envelope(http.post(f"/v1/media/{media_id}/complete", headers=headers), 400,
                          type="invalid_request_error", code="upload_missing")
    # The PUT must send the declared Content-Type.
    assert_error_envelope(httpx.put(upload["upload_url"], content=data, headers={"Content-Type": "image/jpeg"}),
                          400, type="invalid_request_error", code="mime_mismatch")
    put = httpx.put(upload["upload_url"], content=data, headers={"Content-Type": "image/png"})
    assert put.status_code == 200, put.text

    completed = http.post(f"/v1/media/{media_id}/complete", headers=headers)
    assert completed.status_code == 200, completed.text
    body = completed.json()
    assert body["id"] == media_id and body["deduped"] is False
    assert body["sha256"] == hashlib.sha256(data).hexdigest() and body["bytes"] == len(data)
    assert http.get(f"/v1/media/{media_id}", headers=headers).content == data
    assert httpx.get(body["presigned_url"]).content == data
    # Completing again answers the same; the upload URL is spent.
    assert http.post(f"/v1/media/{media_id}/complete", headers=headers).json()["id"] == media_id
    assert_error_envelope(httpx.put(upload["upload_url"], content=data, headers={"Content-Type": "image/png"}),
                          409, type="invalid_request_error", code="upload_completed")


def test_complete_dedupes_against_the_users_existing_media(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    data = unique_png()
    existing = upload_json(http, headers, data)["id"]
    upload = http.post("/v1/media/prepare-upload", headers=headers, json={"mime_type": "image/png"}).json()
    assert httpx.put(upload["upload_url"], content=data, headers={"Content-Type": "image/png"}).status_code == 200
    completed = http.post(f"/v1/media/{upload['id']}/complete", headers=headers).json()
    assert completed["id"] == existing and completed["deduped"] is True
    # The reserved id is gone.
    assert_error_envelope(http.post(f"/v1/media/{upload['id']}/complete", headers=headers), 404,
                          type="not_found_error")


def test_complete_checks_what_was_uploaded(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    jpeg = image_bytes("JPEG", color=(1, 2, 3))
    declared_png = http.post("/v1/media/prepare-upload", headers=headers, json={"mime_type": "image/png"}).json()
    httpx.put(declared_png["upload_url"], content=jpeg, headers={"Content-Type": "image/png"})
    assert_error_envelope(http.post(f"/v1/media/{declared_png['id']}/complete", headers=headers), 400,
                          type="invalid_request_error", code="mime_mismatch")
    wrong_size = http.post("/v1/media/prepare-upload", headers=headers,
                           json={"mime_type": "image/jpeg", "bytes": len(jpeg) + 1}).json()
    httpx.put(wrong_size["upload_url"], content=jpeg, headers={"Content-Type": "image/jpeg"})
    assert_error_envelope(http.post(f"/v1/media/{wrong_size['id']}/complete", headers=headers), 400,
                          type="invalid_request_error", code="size_mismatch")
    garbage = http.post("/v1/media/prepare-upload", headers=headers, json={"mime_type": "image/png"}).json()
    httpx.put(garbage["upload_url"], content=b"\x89PNG\r\n\x1a\n" + b"junk" * 100,
              headers={"Content-Type": "image/png"})
    assert_error_envelope(http.post(f"/v1/media/{garbage['id']}/complete", headers=headers), 400,
                          type="invalid_request_error", code="invalid_image")


def test_prepare_upload_refuses_what_could_never_be_accepted(stack: Stack, http: httpx.Client) -> None:
    headers = fresh_user(stack)
    for body, param in [({"mime_type": "image/svg+xml"}, "mime_type"), ({}, "mime_type"),
                        ({"mime_type": "image/png", "bytes": 21 * 1024 * 1024}, "bytes")]:
        response = http.post("/v1/media/prepare-upload", headers=headers, json=body)
        assert_error_envelope(response, 400, type="invalid_request_error", param=param)


# ---- two users -----------------------------------------------------------------------------------------------


def test_another_users_media_is_not_found_everywhere(stack: Stack, http: httpx.Client) -> None:
    alice, bob = fresh_user(stack), fresh_user(stack)
    media_id = upload_json(http, alice, unique_png())["id"]
    pending = http.post("/v1/media/prepare-upload", headers=alice, json={"mime_type": "image/png"}).json()["id"]
    for method, path in [("GET", f"/v1/media/{media_id}"), ("GET", f"/media/v1/media/{media_id}"),
                         ("GET", f"/v1/media/{media_id}/presign"), ("DELETE", f"/v1/media/{media_id}"),
                         ("POST", f"/v1/media/{pending}/complete"), ("DELETE", f"/v1/media/{pending}")]:
        assert_error_envelope(http.request(method, path, headers=bob), 404, type="not_found_error")
    assert_error_envelope(http.post("/v1/media/presigned-url", headers=bob, json={"id": media_id}), 404,
                          type="not_found_error")
    response = http.post("/v1/media/resolve", headers=bob, json={"payload": {"url": f"data:image/png;{media_id}"}})
    error = assert_error_envelope(response, 400, type="invalid_request_error", code="unknown_media_id",
                                  param="payload.url")
    assert media_id in str(error["message"])
    assert http.get("/v1/media", headers=bob).json()["data"] == []
    # Alice still has it.
    assert http.get(f"/v1/media/{media_id}", headers=alice).status_code == 200
