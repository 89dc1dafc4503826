"""gRPC transport for jan.responses.v1.ResponseService: decode, call the domain, encode."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.core.config import Settings
from server.core.db import utcnow
from server.core.pagination import PageRequest
from server.core.rpc import body_reply, caller, http_body_stream, http_body_unary, json_reply, request_id, unary
from server.core.rpc_client import CallerMetadata
from server.gen.jan.responses.v1 import responses_pb2 as pb
from server.gen.jan.responses.v1 import responses_pb2_grpc
from server.responses.llm_client import LlmClient
from server.responses.mcp_client import McpClient
from server.responses.service import ResponseService
from server.topology import target_of

SSE = "text/event-stream"

_create_body = body_reply(pb.CreateResponseResponse)


def _caller(context: grpc.aio.ServicerContext) -> CallerMetadata:
    who = caller(context)
    return CallerMetadata(who.user_id, who.auth_method, request_id(context))


class ResponseServicer(responses_pb2_grpc.ResponseServiceServicer):
    def __init__(self, service: ResponseService) -> None:
        self._service = service
        self._startup: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> ResponseServicer:
        """Calls the LLM and MCP services over gRPC, wherever they run (this process unless JAN_SERVICE_TARGETS)."""
        llm = grpc.aio.insecure_channel(target_of(settings, "llm"))
        mcp = grpc.aio.insecure_channel(target_of(settings, "mcp"))
        service = ResponseService(
            sessions, LlmClient(llm), McpClient(mcp, settings.responses_tool_timeout_seconds),
            public_url=settings.public_url, max_steps=settings.responses_max_steps,
            history_items=settings.responses_history_items,
        )
        servicer = cls(service)
        servicer._startup = asyncio.get_running_loop().create_task(service.recover(utcnow()))
        return servicer

    @http_body_stream(_create_body)
    async def CreateResponse(
        self, request: pb.CreateResponseRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.CreateResponseResponse]:
        created = await self._service.create(_caller(context), request.body.data)
        if created.events is None:
            assert created.response is not None
            yield json_reply(pb.CreateResponseResponse, created.response)
            return
        await context.send_initial_metadata((("cache-control", "no-cache"),))
        finished = False
        try:
            async for event in created.events:
                yield _create_body(SSE, event)
            finished = True
        finally:
            if not finished and created.task is not None:
                created.task.cancel()  # the client went away mid-stream: stop the model

    @http_body_unary(body_reply(pb.GetResponseResponse))
    async def GetResponse(
        self, request: pb.GetResponseRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetResponseResponse:
        response = await self._service.get(caller(context).user_id, request.response_id)
        return json_reply(pb.GetResponseResponse, response)

    @unary
    async def DeleteResponse(
        self, request: pb.DeleteResponseRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteResponseResponse:
        await self._service.delete(caller(context).user_id, request.response_id)
        return pb.DeleteResponseResponse(id=request.response_id, object="response", deleted=True)

    @http_body_unary(body_reply(pb.CancelResponseResponse))
    async def CancelResponse(
        self, request: pb.CancelResponseRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelResponseResponse:
        response = await self._service.cancel(caller(context).user_id, request.response_id)
        return json_reply(pb.CancelResponseResponse, response)

    @http_body_unary(body_reply(pb.ListInputItemsResponse))
    async def ListInputItems(
        self, request: pb.ListInputItemsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListInputItemsResponse:
        listed = await self._service.list_input_items(
            caller(context).user_id, request.response_id, PageRequest.from_message(request)
        )
        return json_reply(pb.ListInputItemsResponse, listed)
