"""gRPC transport for jan.media.v1.MediaService: decode, call the domain, encode."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from google.api import httpbody_pb2

from server.core.pagination import PageRequest, list_fields
from server.core.rpc import caller, http_body_stream, http_body_unary, unary
from server.gen.jan.media.v1 import media_pb2 as pb
from server.gen.jan.media.v1 import media_pb2_grpc
from server.media.service import MediaService, Uploaded
from server.media.store import Media


def _http_body(content_type: str, data: bytes) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type=content_type, data=data)


def media_message(row: Media, *, deduped: bool = False, presigned_url: str | None = None) -> pb.Media:
    return pb.Media(
        id=row.id,
        object="media",
        mime=row.mime,
        bytes=row.bytes,
        sha256=row.sha256 or "",
        deduped=deduped,
        presigned_url=presigned_url,
        created_at=int(row.created_at.timestamp()),
    )


def _uploaded_message(uploaded: Uploaded) -> pb.Media:
    return media_message(uploaded.media, deduped=uploaded.deduped, presigned_url=uploaded.presigned_url)


class MediaServicer(media_pb2_grpc.MediaServiceServicer):
    def __init__(self, media: MediaService) -> None:
        self._media = media

    @unary
    async def UploadMedia(self, request: pb.UploadMediaRequest, context: grpc.aio.ServicerContext) -> pb.Media:
        user_id = caller(context).user_id
        uploaded = await self._media.upload(user_id, request.body.data, request.body.content_type)
        return _uploaded_message(uploaded)

    @unary
    async def ListMedia(self, request: pb.ListMediaRequest, context: grpc.aio.ServicerContext) -> pb.ListMediaResponse:
        page = await self._media.list_media(caller(context).user_id, PageRequest.from_message(request))
        return pb.ListMediaResponse(data=[media_message(row) for row in page.rows], **list_fields(page))

    @http_body_stream(_http_body)
    async def GetMediaContent(
        self, request: pb.GetMediaContentRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        row = await self._media.get(caller(context).user_id, request.media_id)
        async for chunk in self._media.content(row):
            yield _http_body(row.mime, chunk)

    @unary
    async def DeleteMedia(
        self, request: pb.DeleteMediaRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteMediaResponse:
        await self._media.delete(caller(context).user_id, request.media_id)
        return pb.DeleteMediaResponse(id=request.media_id, object="media", deleted=True)

    @http_body_unary(_http_body)
    async def ResolveMedia(
        self, request: pb.ResolveMediaRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        resolved = await self._media.resolve(caller(context).user_id, request.body.data)
        return _http_body("application/json", resolved)

    @unary
    async def CreatePresignedUrl(
        self, request: pb.CreatePresignedUrlRequest, context: grpc.aio.ServicerContext
    ) -> pb.PresignedUrl:
        media_id, url, ttl = await self._media.presign_from_body(caller(context).user_id, request.body.data)
        return pb.PresignedUrl(id=media_id, url=url, expires_in=ttl)

    @unary
    async def GetPresignedUrl(
        self, request: pb.GetPresignedUrlRequest, context: grpc.aio.ServicerContext
    ) -> pb.PresignedUrl:
        expires_in = request.expires_in if request.HasField("expires_in") else None
        url, ttl = await self._media.presign(caller(context).user_id, request.media_id, expires_in)
        return pb.PresignedUrl(id=request.media_id, url=url, expires_in=ttl)

    @unary
    async def PrepareUpload(
        self, request: pb.PrepareUploadRequest, context: grpc.aio.ServicerContext
    ) -> pb.PreparedUpload:
        row, url, ttl = await self._media.prepare_upload(caller(context).user_id, request.body.data)
        return pb.PreparedUpload(id=row.id, upload_url=url, mime_type=row.mime, expires_in=ttl)

    @unary
    async def CompleteUpload(self, request: pb.CompleteUploadRequest, context: grpc.aio.ServicerContext) -> pb.Media:
        uploaded = await self._media.complete_upload(caller(context).user_id, request.media_id)
        return _uploaded_message(uploaded)

    @http_body_stream(_http_body)
    async def GetSignedMediaContent(
        self, request: pb.GetSignedMediaContentRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        row = await self._media.signed_content(request.media_id, request.expires, request.signature)
        async for chunk in self._media.content(row):
            yield _http_body(row.mime, chunk)

    @unary
    async def PutSignedMediaContent(
        self, request: pb.PutSignedMediaContentRequest, context: grpc.aio.ServicerContext
    ) -> pb.PutSignedMediaContentResponse:
        received = await self._media.put_signed(
            request.media_id, request.expires, request.signature, request.body.data, request.body.content_type
        )
        return pb.PutSignedMediaContentResponse(id=request.media_id, bytes=received)
