"""The media service's placeholder resolution over gRPC, for an LLM service running in another process."""

from __future__ import annotations

import json
from typing import Any

import grpc
from google.api import httpbody_pb2

from server.core.rpc_client import error_from_json, error_from_rpc, sent_http_status
from server.gen.jan.media.v1 import media_pb2, media_pb2_grpc


class RemoteMediaResolver:
    """A MediaResolver (server/llm/chat_media.py) calling MediaService/ResolveMedia as the user."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._media = media_pb2_grpc.MediaServiceStub(channel)

    async def __call__(self, user_id: str, payload: Any, as_data_url: bool) -> Any:
        body = json.dumps({"payload": payload, "format": "data_url" if as_data_url else "url"}).encode()
        request = media_pb2.ResolveMediaRequest(body=httpbody_pb2.HttpBody(content_type="application/json", data=body))
        call = self._media.ResolveMedia(request, metadata=(("x-user-id", user_id),))
        try:
            reply = await call
            status = await sent_http_status(call) or 200
        except grpc.aio.AioRpcError as error:
            raise error_from_rpc(error) from None
        if status >= 400:
            raise error_from_json(status, reply.data)
        return json.loads(reply.data)["payload"]
