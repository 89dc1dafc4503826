"""Images (and things that are not) for the media tests, made on the spot."""

from __future__ import annotations

import base64
import io
import os
import struct
import zipfile
import zlib

from PIL import Image


def image_bytes(
    fmt: str = "PNG", size: tuple[int, int] = (32, 24), color: tuple[int, int, int] = (200, 30, 30)
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


def unique_png(size: tuple[int, int] = (16, 16)) -> bytes:
    """A PNG no other test uploads (random pixels), so dedupe does not mix tests sharing a stack."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)).save(buffer, "PNG")
    return buffer.getvalue()


def noise_png(approx_bytes: int) -> bytes:
    """A real, decodable PNG of random pixels about `approx_bytes` long (random data does not compress)."""
    side = int((approx_bytes / 3) ** 0.5)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buffer, "PNG", compress_level=0)
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_bomb(side: int = 100_000) -> bytes:
    """A valid-looking PNG header claiming side x side grayscale pixels, with a tiny zlib stream of zeros: a few
    hundred bytes that would decompress to side*side bytes (10 GB by default)."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    row = b"\0" * (side + 1)
    compressor = zlib.compressobj(9)
    idat = compressor.compress(row * 16) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


PNG_HEADER_GARBAGE = b"\x89PNG\r\n\x1a\n" + b"this is not an image at all" * 20
SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b'<rect width="10" height="10"/></svg>'
)


def zip_file() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("hello.txt", "hello")
    return buffer.getvalue()
