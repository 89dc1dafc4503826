"""Media in a local directory. File I/O runs in threads, off the event loop; writes are atomic (temp file and
rename), so a reader never sees half an object. Presigned URLs point at this server's signed content route."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from server.media.signing import UrlSigner
from server.media.storage.base import CHUNK_BYTES, MediaStorage, ObjectMissing


class LocalStorage(MediaStorage):
    kind = "local"

    def __init__(self, root: Path, signer: UrlSigner) -> None:
        self._root = root
        self._signer = signer

    async def start(self) -> None:
        """Nothing to open: directories are made as objects are written."""

    async def close(self) -> None:
        """Nothing to release."""

    def _path(self, key: str) -> Path:
        path = (self._root / key).resolve()
        if not path.is_relative_to(self._root.resolve()):
            raise ValueError(f"storage key escapes the media directory: {key!r}")
        return path

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await asyncio.to_thread(self._write, self._path(key), data)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temp_name = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(descriptor, "wb") as temp:
                temp.write(data)
            os.replace(temp_name, path)
        except BaseException:
            os.unlink(temp_name)
            raise

    async def size(self, key: str) -> int | None:
        try:
            return (await asyncio.to_thread(self._path(key).stat)).st_size
        except FileNotFoundError:
            return None

    async def read(self, key: str) -> bytes:
        try:
            return await asyncio.to_thread(self._path(key).read_bytes)
        except FileNotFoundError:
            raise ObjectMissing(key) from None

    async def chunks(self, key: str, chunk_bytes: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            file = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise ObjectMissing(key) from None
        try:
            while chunk := await asyncio.to_thread(file.read, chunk_bytes):
                yield chunk
        finally:
            await asyncio.to_thread(file.close)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)

    async def presigned_get(self, key: str, *, media_id: str, mime: str, expires_in: int) -> str:
        return self._signer.url("GET", media_id, expires_in)

    async def presigned_put(self, key: str, *, media_id: str, mime: str, expires_in: int) -> str:
        return self._signer.url("PUT", media_id, expires_in)
