"""Media domain: store images per user with dedupe, hand out presigned URLs, resolve `jan_` placeholders, and
delete what outlived the retention. No gRPC here.

Every lookup is scoped to the calling user: another user's media, like a pending upload, is a 404 (a 400 naming
the id in placeholders). Bytes are stored once per content under a content-addressed key; a per-key lock makes
"store the bytes, then add a row naming them" and "drop a row, then delete the bytes if no row names them" never
interleave within this process.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.core.config import Settings
from server.core.db import utcnow
from server.core.errors import ApiError, invalid_request
from server.core.ids import MEDIA_PLACEHOLDER
from server.core.json_body import optional_int, optional_str, parse_object
from server.core.pagination import Page, PageRequest, paginate
from server.core.ssrf import SsrfPolicy
from server.media import store
from server.media.ids import MEDIA_ID, new_media_id
from server.media.images import IMAGE_TYPES, CheckedImage, file_too_large, inspect
from server.media.retention import RetentionSweep
from server.media.signing import UrlSigner, load_or_create_key
from server.media.sources import UploadLimits, read_upload
from server.media.storage import MediaStorage, ObjectMissing, storage_from_settings
from server.media.store import PENDING, READY, Media

log = logging.getLogger(__name__)

MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # S3's limit for SigV4 presigned URLs
# A reserved upload id lives this long past its upload URL's expiry before the sweep drops it.
PENDING_GRACE = timedelta(hours=1)


def media_not_found(media_id: str) -> ApiError:
    return ApiError(404, f"media {media_id} not found", code="media_not_found")


def _checked_id(media_id: str, param: str = "media_id") -> str:
    if not MEDIA_ID.match(media_id):
        raise invalid_request(f"'{param}' must be jan_ followed by a 26-character lowercase ULID: {media_id!r}",
                              param=param, code="invalid_id")
    return media_id


@dataclass(frozen=True)
class Uploaded:
    media: Media
    deduped: bool
    presigned_url: str | None


class _KeyedLocks:
    """One asyncio.Lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class MediaService:
    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._settings = settings
        self._sessions = sessions
        self._locks = _KeyedLocks()
        self._limits = UploadLimits(
            max_bytes=settings.media_max_bytes,
            fetch_timeout_seconds=settings.media_remote_fetch_timeout_seconds,
            ssrf_policy=SsrfPolicy.parse(settings.ssrf_allow_hosts),
        )
        self._storage: MediaStorage | None = None
        self._signer: UrlSigner | None = None
        self._sweep = RetentionSweep(self, settings.media_sweep_interval_seconds)

    async def start(self) -> None:
        """Loads the signing key, opens the storage and starts the retention sweep."""
        key = await asyncio.to_thread(load_or_create_key, self._settings)
        self._signer = UrlSigner(key, self._settings.media_public_url or self._settings.public_url)
        self._storage = storage_from_settings(self._settings, self._signer)
        await self._storage.start()
        self._sweep.start()

    async def stop(self) -> None:
        await self._sweep.stop()
        if self._storage is not None:
            await self._storage.close()

    @property
    def storage(self) -> MediaStorage:
        if self._storage is None:
            raise RuntimeError("MediaService.start() was not awaited")
        return self._storage

    @property
    def signer(self) -> UrlSigner:
        if self._signer is None:
            raise RuntimeError("MediaService.start() was not awaited")
        return self._signer

    # Uploads

    async def upload(self, user_id: str, body: bytes, content_type: str) -> Uploaded:
        data = await read_upload(body, content_type, self._limits)
        image = await self._inspect(data)
        return await self._store(user_id, data, image)

    async def prepare_upload(self, user_id: str, body: bytes) -> tuple[Media, str, int]:
        """A pending row and the URL to PUT its bytes to: (row, upload_url, expires_in)."""
        payload = parse_object(body)
        mime = (optional_str(payload, "mime_type") or "").lower()
        if mime not in IMAGE_TYPES:
            raise invalid_request(f"unsupported mime type {mime or '(none)'}; one of {', '.join(IMAGE_TYPES)}",
                                  param="mime_type", code="unsupported_mime_type")
        declared = optional_int(payload, "bytes", minimum=1, maximum=self._settings.media_max_bytes) or 0
        media_id, ttl = new_media_id(), self._settings.media_presign_ttl_seconds
        row = Media(id=media_id, user_id=user_id, status=PENDING, storage=self.storage.kind,
                    storage_key=f"uploads/{media_id}", mime=mime, bytes=declared,
                    expires_at=utcnow() + timedelta(seconds=ttl) + PENDING_GRACE)
        async with self._sessions.begin() as session:
            session.add(row)
        url = await self.storage.presigned_put(row.storage_key, media_id=media_id, mime=mime, expires_in=ttl)
        return row, url, ttl

    async def complete_upload(self, user_id: str, media_id: str) -> Uploaded:
        _checked_id(media_id)
        async with self._sessions() as session:
            row = await store.get_owned(session, user_id, media_id, ready=False)
        if row is None:
            raise media_not_found(media_id)
        if row.status == READY:
            return await self._uploaded(row, deduped=False)
        size = await self.storage.size(row.storage_key)
        if size is None:
            raise invalid_request(f"nothing has been uploaded for {media_id} yet", code="upload_missing")
        if size > self._settings.media_max_bytes:
            raise file_too_large(self._settings.media_max_bytes)
        try:
            data = await self.storage.read(row.storage_key)
        except ObjectMissing:
            raise invalid_request(f"nothing has been uploaded for {media_id} yet", code="upload_missing") from None
        image = await self._inspect(data)
        if row.bytes and row.bytes != len(data):
            raise invalid_request(f"{len(data)} bytes were uploaded, but {row.bytes} were declared",
                                  code="size_mismatch")
        if image.mime != row.mime:
            raise invalid_request(f"the uploaded file is {image.mime}, not the declared {row.mime}",
                                  code="mime_mismatch")
        uploaded = await self._store(user_id, data, image, pending=row)
        await self.storage.delete(row.storage_key)
        return uploaded

    async def put_signed(self, media_id: str, expires: str, signature: str, data: bytes, content_type: str) -> int:
        """The local presigned PUT: stores the bytes of a pending upload (checked later by complete_upload)."""
        self.signer.check("PUT", media_id, expires, signature)
        async with self._sessions() as session:
            row = await store.get_by_id(session, media_id)
        if row is None:
            raise media_not_found(media_id)
        if row.status != PENDING:
            raise ApiError(409, f"the upload of {media_id} is already completed", code="upload_completed")
        if content_type.split(";", 1)[0].strip().lower() != row.mime:
            raise invalid_request(f"Content-Type must be {row.mime}, as declared in prepare-upload",
                                  code="mime_mismatch")
        if not data:
            raise invalid_request("file is empty", code="file_empty")
        if len(data) > self._settings.media_max_bytes:
            raise file_too_large(self._settings.media_max_bytes)
        await self.storage.put(row.storage_key, data, row.mime)
        return len(data)

    async def _inspect(self, data: bytes) -> CheckedImage:
        return await asyncio.to_thread(
            inspect, data, max_bytes=self._settings.media_max_bytes, max_pixels=self._settings.media_max_pixels
        )

    async def _store(self, user_id: str, data: bytes, image: CheckedImage, pending: Media | None = None) -> Uploaded:
        """Stores the bytes under their content key and makes a row (or the pending one) name them, unless the user
        already has these bytes: then that row is the answer (deduped) and the pending one goes."""
        key = f"images/{image.sha256}.{image.extension}"
        async with self._locks.hold(key):
            existing = await self._dedupe(user_id, image.sha256, pending)
            if existing is not None:
                return await self._uploaded(existing, deduped=True)
            if await self.storage.size(key) != len(data):
                await self.storage.put(key, data, image.mime)
            values = {"status": READY, "storage": self.storage.kind, "storage_key": key, "mime": image.mime,
                      "bytes": len(data), "sha256": image.sha256, "expires_at": self._retention_end()}
            try:
                async with self._sessions.begin() as session:
                    if pending is not None:
                        row = await session.get_one(Media, pending.pk)
                        for name, value in values.items():
                            setattr(row, name, value)
                    else:
                        row = Media(id=new_media_id(), user_id=user_id, created_at=utcnow(), **values)
                        session.add(row)
            except IntegrityError:  # the same bytes stored meanwhile by another process: dedupe after all
                existing = await self._dedupe(user_id, image.sha256, pending)
                if existing is None:
                    raise
                return await self._uploaded(existing, deduped=True)
        return await self._uploaded(row, deduped=False)

    async def _dedupe(self, user_id: str, sha256: str, pending: Media | None) -> Media | None:
        """The user's row with these bytes, its retention restarted (and the pending row dropped); or None."""
        async with self._sessions.begin() as session:
            existing = await store.get_by_sha256(session, user_id, sha256)
            if existing is None:
                return None
            existing.expires_at = self._retention_end()
            if pending is not None:
                await store.delete_row(session, pending)
        return existing

    def _retention_end(self) -> Any:
        return utcnow() + timedelta(days=self._settings.media_retention_days)

    async def _uploaded(self, row: Media, *, deduped: bool) -> Uploaded:
        url = await self.storage.presigned_get(
            row.storage_key, media_id=row.id, mime=row.mime, expires_in=self._settings.media_presign_ttl_seconds
        )
        return Uploaded(media=row, deduped=deduped, presigned_url=url)

    # Reading, listing, deleting

    async def get(self, user_id: str, media_id: str) -> Media:
        _checked_id(media_id)
        async with self._sessions() as session:
            row = await store.get_owned(session, user_id, media_id)
        if row is None:
            raise media_not_found(media_id)
        return row

    async def content(self, row: Media) -> AsyncIterator[bytes]:
        """The bytes in chunks; a 404 if the object has vanished from storage."""
        try:
            async for chunk in self.storage.chunks(row.storage_key):
                yield chunk
        except ObjectMissing:
            raise media_not_found(row.id) from None

    async def signed_content(self, media_id: str, expires: str, signature: str) -> Media:
        """The media a local presigned download URL names, once its signature and expiry are checked."""
        self.signer.check("GET", media_id, expires, signature)
        async with self._sessions() as session:
            row = await store.get_by_id(session, media_id)
        if row is None or row.status != READY:
            raise media_not_found(media_id)
        return row

    async def list_media(self, user_id: str, page: PageRequest) -> Page[Media]:
        async with self._sessions() as session:
            return await paginate(session, store.owned_media(user_id), pk=Media.pk, public_id=Media.id, page=page)

    async def delete(self, user_id: str, media_id: str) -> None:
        _checked_id(media_id)
        async with self._sessions.begin() as session:
            row = await store.get_owned(session, user_id, media_id, ready=False)
            if row is None:
                raise media_not_found(media_id)
            await store.delete_row(session, row)
        await self.release_bytes(row.storage_key)

    async def release_bytes(self, storage_key: str) -> None:
        """Deletes the object under this key if no row names it any more."""
        async with self._locks.hold(storage_key):
            async with self._sessions() as session:
                in_use = await store.key_in_use(session, storage_key)
            if not in_use:
                await self.storage.delete(storage_key)

    # Presigned URLs and placeholders

    async def presign(self, user_id: str, media_id: str, expires_in: int | None) -> tuple[str, int]:
        """(url, expires_in) for one of the user's media."""
        if expires_in is not None and not 1 <= expires_in <= MAX_PRESIGN_SECONDS:
            raise invalid_request(f"'expires_in' must be between 1 and {MAX_PRESIGN_SECONDS} seconds",
                                  param="expires_in")
        ttl = expires_in or self._settings.media_presign_ttl_seconds
        row = await self.get(user_id, media_id)
        url = await self.storage.presigned_get(row.storage_key, media_id=row.id, mime=row.mime, expires_in=ttl)
        return url, ttl

    async def presign_from_body(self, user_id: str, body: bytes) -> tuple[str, str, int]:
        """The seed's POST /v1/media/presigned-url: `{id, expires_in?}` -> (id, url, expires_in)."""
        payload = parse_object(body)
        media_id = optional_str(payload, "id") or optional_str(payload, "media_id") or ""
        if not media_id:
            raise invalid_request("'id' is required", param="id")
        _checked_id(media_id, "id")
        url, ttl = await self.presign(user_id, media_id, optional_int(payload, "expires_in"))
        return media_id, url, ttl

    async def resolve(self, user_id: str, body: bytes) -> bytes:
        """POST /v1/media/resolve: `{payload, format?}` -> `{payload}` as JSON bytes."""
        request = await asyncio.to_thread(parse_object, body)
        if "payload" not in request:
            raise invalid_request("'payload' is required", param="payload")
        form = optional_str(request, "format") or "url"
        if form not in ("url", "data_url"):
            raise invalid_request("'format' must be 'url' or 'data_url'", param="format")
        resolved = await self.resolve_placeholders(user_id, {"payload": request["payload"]}, form == "data_url")
        return (await asyncio.to_thread(json.dumps, resolved)).encode()

    async def resolve_placeholders(self, user_id: str, payload: Any, as_data_url: bool = False) -> Any:
        """`payload` with every `data:<mime>;jan_<id>` in any string replaced by a presigned URL of the user's
        media (or a base64 data URL of it). A 400 whose `param` is the JSON path of the first string naming an id
        that is unknown or not the caller's. Values without placeholders come back unchanged."""
        first_seen: dict[str, str] = {}
        _collect_ids(payload, "", first_seen)
        if not first_seen:
            return payload
        async with self._sessions() as session:
            rows = await store.get_owned_many(session, user_id, first_seen)
        for media_id, path in first_seen.items():
            if media_id not in rows:
                raise invalid_request(f"unknown media id {media_id}", param=path or None, code="unknown_media_id")
        replacements = {media_id: await self._replacement(row, as_data_url) for media_id, row in rows.items()}
        return _replace(payload, replacements)

    async def _replacement(self, row: Media, as_data_url: bool) -> str:
        if as_data_url:
            data = await self.storage.read(row.storage_key)
            return f"data:{row.mime};base64," + (await asyncio.to_thread(base64.b64encode, data)).decode()
        ttl = self._settings.media_presign_ttl_seconds
        return await self.storage.presigned_get(row.storage_key, media_id=row.id, mime=row.mime, expires_in=ttl)

    # Retention

    async def sweep_once(self, batch: int = 200) -> int:
        """Deletes the rows past their retention (and pending uploads never completed) with their unshared
        bytes; returns how many rows went."""
        deleted = 0
        while True:
            async with self._sessions.begin() as session:
                rows = await store.expired(session, batch)
                for row in rows:
                    await store.delete_row(session, row)
            for key in {row.storage_key for row in rows}:
                await self.release_bytes(key)
            deleted += len(rows)
            if len(rows) < batch:
                return deleted


def _collect_ids(value: Any, path: str, first_seen: dict[str, str]) -> None:
    if isinstance(value, str):
        for match in MEDIA_PLACEHOLDER.finditer(value):
            first_seen.setdefault(match.group(2), path)
    elif isinstance(value, dict):
        for key, item in value.items():
            _collect_ids(item, f"{path}.{key}" if path else str(key), first_seen)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _collect_ids(item, f"{path}[{index}]", first_seen)


def _replace(value: Any, replacements: dict[str, str]) -> Any:
    if isinstance(value, str):
        return MEDIA_PLACEHOLDER.sub(lambda match: replacements[match.group(2)], value)
    if isinstance(value, dict):
        return {key: _replace(item, replacements) for key, item in value.items()}
    if isinstance(value, list):
        return [_replace(item, replacements) for item in value]
    return value
