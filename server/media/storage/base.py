"""The storage interface the media service is written against. Keys are relative paths like
`images/<sha256>.png` (content-addressed, shared by every media row with those bytes) or `uploads/<id>` (a
presigned upload waiting for its completion)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

CHUNK_BYTES = 1024 * 1024


class ObjectMissing(Exception):
    """No object under that key."""


class MediaStorage(ABC):
    # "local" or "s3", stored on each row.
    kind: str

    @abstractmethod
    async def start(self) -> None:
        """Opens connections; called once before use."""

    @abstractmethod
    async def close(self) -> None:
        """Releases connections."""

    @abstractmethod
    async def put(self, key: str, data: bytes, content_type: str) -> None:
        """Writes the object whole (replacing one under the same key)."""

    @abstractmethod
    async def size(self, key: str) -> int | None:
        """The object's size, or None when there is none."""

    @abstractmethod
    async def read(self, key: str) -> bytes:
        """The whole object; ObjectMissing when there is none."""

    @abstractmethod
    def chunks(self, key: str, chunk_bytes: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
        """The object in pieces of at most chunk_bytes; ObjectMissing (before the first piece) when there is none."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Removes the object; nothing happens when there is none."""

    @abstractmethod
    async def presigned_get(self, key: str, *, media_id: str, mime: str, expires_in: int) -> str:
        """A URL anyone can GET the bytes from (with Content-Type `mime`) for `expires_in` seconds."""

    @abstractmethod
    async def presigned_put(self, key: str, *, media_id: str, mime: str, expires_in: int) -> str:
        """A URL anyone can PUT bytes to (sending Content-Type `mime`) for `expires_in` seconds."""
