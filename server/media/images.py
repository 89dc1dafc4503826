"""What an uploaded file is: its type recognised from its bytes (never the declared one), and proof that it is
an image Pillow can read, within the size and pixel limits. Pure functions; callers run `inspect` in a thread."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from server.core.errors import invalid_request

# Accepted types: mime -> (Pillow format, file extension of stored objects).
IMAGE_TYPES: dict[str, tuple[str, str]] = {
    "image/jpeg": ("JPEG", "jpg"),
    "image/png": ("PNG", "png"),
    "image/webp": ("WEBP", "webp"),
    "image/gif": ("GIF", "gif"),
    "image/bmp": ("BMP", "bmp"),
    "image/tiff": ("TIFF", "tiff"),
}


@dataclass(frozen=True)
class CheckedImage:
    mime: str
    sha256: str
    width: int
    height: int

    @property
    def extension(self) -> str:
        return IMAGE_TYPES[self.mime][1]


def sniff_mime(data: bytes) -> str:
    """The media type the bytes are, by their signature; application/octet-stream when unknown."""
    head = data[:512]
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head.startswith(b"BM"):
        return "image/bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    return _other_mime(head)


def _other_mime(head: bytes) -> str:
    """Names common non-images so that the 400 says what was sent."""
    signatures = [
        (b"PK\x03\x04", "application/zip"),
        (b"%PDF-", "application/pdf"),
        (b"\x1f\x8b", "application/gzip"),
        (b"\x00\x00\x01\x00", "image/x-icon"),
    ]
    for signature, mime in signatures:
        if head.startswith(signature):
            return mime
    if head[4:12] in (b"ftypavif", b"ftypheic", b"ftypheix", b"ftypmif1"):
        return "image/avif" if head[8:12] == b"avif" else "image/heic"
    try:
        text = head.decode("utf-8").lstrip("\ufeff \t\r\n").lower()
    except UnicodeDecodeError:
        return "application/octet-stream"
    if text.startswith("<svg") or ("<svg" in text and text.startswith(("<?xml", "<!doctype svg", "<!--"))):
        return "image/svg+xml"
    if text.startswith(("<!doctype html", "<html")):
        return "text/html"
    return "text/plain" if text.isprintable() or "\n" in text else "application/octet-stream"


def inspect(data: bytes, *, max_bytes: int, max_pixels: int) -> CheckedImage:
    """Checks an upload; a 400 saying why it is refused. Blocking (Pillow, hashing): run it in a thread."""
    if not data:
        raise invalid_request("file is empty", code="file_empty")
    if len(data) > max_bytes:
        raise file_too_large(max_bytes)
    mime = sniff_mime(data)
    if mime not in IMAGE_TYPES:
        raise invalid_request(f"unsupported mime type {mime}", code="unsupported_mime_type")
    width, height = _verified_size(data, IMAGE_TYPES[mime][0], max_pixels)
    return CheckedImage(mime=mime, sha256=hashlib.sha256(data).hexdigest(), width=width, height=height)


def file_too_large(max_bytes: int) -> Exception:
    return invalid_request(f"file exceeds max size of {max_bytes} bytes", code="file_too_large")


def _verified_size(data: bytes, pillow_format: str, max_pixels: int) -> tuple[int, int]:
    """Opens the image as its sniffed format (headers only: no pixels are decoded), refuses more than
    `max_pixels` before anything could allocate them, then lets Pillow verify the file's structure."""
    try:
        with Image.open(io.BytesIO(data), formats=[pillow_format]) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise _too_many_pixels(width, height, max_pixels)
            image.verify()
    except Image.DecompressionBombError:
        raise invalid_request(
            f"image dimensions exceed the limit of {max_pixels} pixels", code="image_too_large"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
        raise invalid_request(f"file is not a decodable {pillow_format.lower()} image: {error}",
                              code="invalid_image") from None
    return width, height


def _too_many_pixels(width: int, height: int, max_pixels: int) -> Exception:
    return invalid_request(
        f"image is {width}x{height} pixels, more than the limit of {max_pixels} pixels", code="image_too_large"
    )
