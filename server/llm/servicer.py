"""gRPC transport for jan.llm.v1.LlmService: decode, call the domain, encode."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from google.api import httpbody_pb2

from server.core.rpc import caller, http_body_stream, unary
from server.gen.jan.llm.v1 import llm_pb2, llm_pb2_grpc
from server.llm.backends.base import InferenceBackend
from server.llm.chat import ChatCompletions
from server.llm.models import ModelRegistry


def _model_message(backend: InferenceBackend) -> llm_pb2.Model:
    info = backend.info
    return llm_pb2.Model(id=info.model_id, object="model", created=info.created, owned_by=info.owned_by)


def _body(content_type: str, data: bytes) -> llm_pb2.CreateChatCompletionResponse:
    return llm_pb2.CreateChatCompletionResponse(body=httpbody_pb2.HttpBody(content_type=content_type, data=data))


class LlmServicer(llm_pb2_grpc.LlmServiceServicer):
    def __init__(self, models: ModelRegistry) -> None:
        self._models = models
        self._chat = ChatCompletions(models)

    @unary
    async def ListModels(
        self, request: llm_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.ListModelsResponse:
        return llm_pb2.ListModelsResponse(object="list", data=[_model_message(b) for b in self._models.all()])

    @unary
    async def GetModel(self, request: llm_pb2.GetModelRequest, context: grpc.aio.ServicerContext) -> llm_pb2.Model:
        return _model_message(self._models.get(request.model))

    @http_body_stream(_body)
    async def CreateChatCompletion(
        self, request: llm_pb2.CreateChatCompletionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[llm_pb2.CreateChatCompletionResponse]:
        caller(context)
        pieces = self._chat.create(request.body.data)
        first = True
        async for content_type, data in pieces:
            if first and content_type == "text/event-stream":
                await context.send_initial_metadata((("cache-control", "no-cache"),))
            first = False
            yield _body(content_type, data)
