"""Where media bytes live: one interface, a local directory (default) and S3."""

from __future__ import annotations

from server.core.config import Settings
from server.media.signing import UrlSigner
from server.media.storage.base import MediaStorage, ObjectMissing
from server.media.storage.local import LocalStorage
from server.media.storage.s3 import S3Storage

__all__ = ["LocalStorage", "MediaStorage", "ObjectMissing", "S3Storage", "storage_from_settings"]


def storage_from_settings(settings: Settings, signer: UrlSigner) -> MediaStorage:
    if settings.media_storage == "s3":
        return S3Storage(settings)
    return LocalStorage(settings.data_dir / "media", signer)
