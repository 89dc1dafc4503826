"""Media in an S3 bucket (AWS, MinIO, moto...) through aiobotocore.

Presigned URLs are signed offline by a second client whose endpoint is the public one: SigV4 signs the host, so
rewriting the host of a URL signed for the internal endpoint (as the original did) would break the signature.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from server.core.config import Settings
from server.core.errors import ApiError
from server.media.storage.base import CHUNK_BYTES, MediaStorage, ObjectMissing

_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}


class S3Storage(MediaStorage):
    kind = "s3"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._bucket = settings.media_s3_bucket
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._presigner: Any = None

    async def start(self) -> None:
        settings = self._settings
        if not self._bucket:
            raise RuntimeError("media_storage is s3 but media_s3_bucket is empty")
        session = get_session()
        config = AioConfig(
            signature_version="s3v4",
            s3={"addressing_style": "path" if settings.media_s3_path_style else "auto"},
            retries={"max_attempts": 2},
        )
        credentials = {
            "region_name": settings.media_s3_region,
            "aws_access_key_id": settings.media_s3_access_key.get_secret_value() or None,
            "aws_secret_access_key": settings.media_s3_secret_key.get_secret_value() or None,
            "config": config,
        }
        endpoint = settings.media_s3_endpoint or None
        self._client = await self._stack.enter_async_context(
            session.create_client("s3", endpoint_url=endpoint, **credentials)
        )
        public = settings.media_s3_public_endpoint or None
        if public and public != endpoint:
            self._presigner = await self._stack.enter_async_context(
                session.create_client("s3", endpoint_url=public, **credentials)
            )
        else:
            self._presigner = self._client

    async def close(self) -> None:
        await self._stack.aclose()

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        with _storage_errors():
            await self._client.put_object(Bucket=self._bucket, Key=key, Body=data, ContentType=content_type)

    async def size(self, key: str) -> int | None:
        try:
            with _storage_errors():
                head = await self._client.head_object(Bucket=self._bucket, Key=key)
        except ObjectMissing:
            return None
        return int(head["ContentLength"])

    async def read(self, key: str) -> bytes:
        with _storage_errors():
            async with await self._get(key) as body:
                return bytes(await body.read())

    async def chunks(self, key: str, chunk_bytes: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
        with _storage_errors():
            async with await self._get(key) as body:
                while chunk := await body.read(chunk_bytes):
                    yield bytes(chunk)

    async def _get(self, key: str) -> Any:
        response = await self._client.get_object(Bucket=self._bucket, Key=key)
        return response["Body"]

    async def delete(self, key: str) -> None:
        with _storage_errors():
            await self._client.delete_object(Bucket=self._bucket, Key=key)

    async def presigned_get(self, key: str, *, media_id: str, mime: str, expires_in: int) -> str:
        params = {"Bucket": self._bucket, "Key": key, "ResponseContentType": mime}
        return str(await self._presigner.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_in))

    async def presigned_put(self, key: str, *, media_id: str, mime: str, expires_in: int) -> str:
        # ContentType is signed: the PUT must send exactly this Content-Type. Size and type are checked again
        # when the upload is completed (a presigned PUT cannot bound the size).
        params = {"Bucket": self._bucket, "Key": key, "ContentType": mime}
        return str(await self._presigner.generate_presigned_url("put_object", Params=params, ExpiresIn=expires_in))


@contextlib.contextmanager
def _storage_errors() -> Iterator[None]:
    """A missing object is ObjectMissing; any other S3 or network failure a 503 the client may retry."""
    try:
        yield
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code in _MISSING_CODES:
            raise ObjectMissing(code) from None
        raise _unavailable(f"S3 answered {code}") from None
    except (BotoCoreError, aiohttp.ClientError, OSError) as error:
        raise _unavailable(type(error).__name__) from None


def _unavailable(reason: str) -> ApiError:
    return ApiError(503, f"media storage is unavailable ({reason}); retry shortly", code="storage_unavailable")
