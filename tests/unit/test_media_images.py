"""What an upload is: recognised from its bytes, decodable by Pillow, within the size and pixel limits; media ids;
the signed URLs of local storage; reading multipart bodies and data URLs."""

from __future__ import annotations

import time

import pytest

from server.core.errors import ApiError
from server.media.ids import MEDIA_ID, new_media_id, new_ulid
from server.media.images import inspect, sniff_mime
from server.media.signing import UrlSigner
from server.media.sources import decode_data_url, multipart_file
from tests.support.media_images import PNG_HEADER_GARBAGE, SVG, data_url, image_bytes, png_bomb, zip_file

LIMITS = {"max_bytes": 1024 * 1024, "max_pixels": 10_000_000}


def _refused(data: bytes, code: str, **limits: int) -> ApiError:
    with pytest.raises(ApiError) as caught:
        inspect(data, **{**LIMITS, **limits})
    assert caught.value.status == 400
    assert caught.value.code == code, caught.value.message
    return caught.value


@pytest.mark.parametrize("fmt,mime", [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp"),
                                      ("GIF", "image/gif"), ("BMP", "image/bmp"), ("TIFF", "image/tiff")])
def test_accepted_images_are_recognised_from_their_bytes(fmt: str, mime: str) -> None:
    data = image_bytes(fmt, size=(7, 5))
    checked = inspect(data, **LIMITS)
    assert (checked.mime, checked.width, checked.height) == (mime, 7, 5)
    assert len(checked.sha256) == 64


@pytest.mark.parametrize("data,mime", [(SVG, "image/svg+xml"), (zip_file(), "application/zip"),
                                       (b"hello\n", "text/plain"), (b"%PDF-1.7 ...", "application/pdf"),
                                       (bytes([0, 159, 146, 150, 1, 2]), "application/octet-stream")])
def test_other_files_are_named_in_the_refusal(data: bytes, mime: str) -> None:
    assert sniff_mime(data) == mime
    assert _refused(data, "unsupported_mime_type").message == f"unsupported mime type {mime}"


def test_empty_oversized_and_undecodable_files_are_refused() -> None:
    assert _refused(b"", "file_empty").message == "file is empty"
    assert _refused(b"\xff\xd8\xff" + b"\0" * 2000, "file_too_large", max_bytes=1000).message == (
        "file exceeds max size of 1000 bytes"
    )
    _refused(PNG_HEADER_GARBAGE, "invalid_image")
    truncated = image_bytes("PNG", size=(64, 64))[:60]
    _refused(truncated, "invalid_image")


def test_decompression_bombs_are_refused_before_any_pixel_is_decoded() -> None:
    bomb = png_bomb()
    assert len(bomb) < 10_000  # tiny file, 10 gigapixels
    assert "pixels" in _refused(bomb, "image_too_large").message
    # Below Pillow's own bomb threshold, our limit still decides.
    large = image_bytes("PNG", size=(4000, 3000))
    assert "4000x3000" in _refused(large, "image_too_large", max_pixels=1_000_000).message


def test_media_ids_are_lowercase_ulids_in_time_order() -> None:
    media_id = new_media_id()
    assert MEDIA_ID.match(media_id) and len(media_id) == 30
    assert new_ulid(1_000)[:10] < new_ulid(2_000)[:10]
    assert new_ulid(0)[:10] == "0000000000"
    assert len({new_media_id() for _ in range(1000)}) == 1000


def test_signed_urls_cover_method_id_and_expiry() -> None:
    signer = UrlSigner(b"k" * 32, "http://gateway.example/")
    url = signer.url("GET", "jan_x", 60)
    assert url.startswith("http://gateway.example/v1/media/jan_x/content?expires=")
    expires, signature = url.split("expires=")[1].split("&signature=")
    signer.check("GET", "jan_x", expires, signature)
    for method, media_id, when, sig, code in [
        ("PUT", "jan_x", expires, signature, "invalid_signature"),
        ("GET", "jan_y", expires, signature, "invalid_signature"),
        ("GET", "jan_x", str(int(expires) + 1), signature, "invalid_signature"),
        ("GET", "jan_x", "", "", "invalid_signature"),
    ]:
        with pytest.raises(ApiError) as caught:
            signer.check(method, media_id, when, sig)
        assert (caught.value.status, caught.value.code) == (403, code)
    other = UrlSigner(b"o" * 32, "http://gateway.example")
    with pytest.raises(ApiError):
        other.check("GET", "jan_x", expires, signature)
    past = signer.url("GET", "jan_x", -5)
    expires, signature = past.split("expires=")[1].split("&signature=")
    assert int(expires) < time.time()
    with pytest.raises(ApiError) as caught:
        signer.check("GET", "jan_x", expires, signature)
    assert caught.value.code == "url_expired"


def test_multipart_bodies_yield_the_file_field() -> None:
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
            b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n\x89PNG\r\n\x1a\n\r\n--\r\n--XyZ--\r\n")
    assert multipart_file(body, "multipart/form-data; boundary=XyZ") == b"\x89PNG\r\n\x1a\n\r\n--"
    with pytest.raises(ApiError) as caught:
        multipart_file(body.replace(b'name="file"', b'name="other"'), "multipart/form-data; boundary=XyZ")
    assert caught.value.param == "file"


def test_data_urls_must_be_base64_and_within_the_limit() -> None:
    assert decode_data_url(data_url(b"abc"), 10) == b"abc"
    assert decode_data_url("data:image/png;charset=x;base64,YWJj", 10) == b"abc"
    for bad in ("data:image/png,abc", "YWJj", "data:image/png;base64,YW*j"):
        with pytest.raises(ApiError) as caught:
            decode_data_url(bad, 10)
        assert caught.value.param == "source.data_url"
    with pytest.raises(ApiError) as caught:
        decode_data_url(data_url(b"x" * 100), 10)
    assert caught.value.code == "file_too_large"
