"""gRPC transport for jan.llm.v1.LlmService: decode, call the domain, encode."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlsplit

import grpc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.core.pagination import PageRequest
from server.core.rpc import body_reply, caller, http_body_stream, http_body_unary, json_reply, metadata, unary
from server.gen.jan.llm.v1 import llm_pb2, llm_pb2_grpc
from server.llm.catalog.router import ModelRouter, Route
from server.llm.chat import ChatCompletions
from server.llm.chat_media import MediaResolver
from server.llm.completions.service import StoredCompletions
from server.llm.embeddings import Embedder
from server.llm.embeddings.api import EmbeddingsApi
from server.llm.memory import ConversationMemory


def _model_message(model_id: str, route: Route, *, provider_data: bool = False) -> llm_pb2.Model:
    message = llm_pb2.Model(id=model_id, object="model", created=route.created, owned_by=route.owned_by)
    if provider_data:
        message.provider_id = route.provider_id
        message.provider_vendor = route.provider_vendor
        message.provider_name = route.provider_name
    return message


def _wants_provider_data(context: grpc.aio.ServicerContext) -> bool:
    """The original Jan's `X-PROVIDER-DATA: true`: every provider's copy of a model, saying whose it is."""
    return metadata(context).get("x-provider-data", "").lower() == "true"


_body = body_reply(llm_pb2.CreateChatCompletionResponse)
_embedding_body = body_reply(llm_pb2.CreateEmbeddingResponse)


def _page_request(
    request: llm_pb2.ListChatCompletionsRequest | llm_pb2.ListChatCompletionMessagesRequest,
) -> PageRequest:
    """OpenAI lists stored completions and their messages oldest first by default."""
    return PageRequest.from_message(request, default_order="asc")


_METADATA_PARAM = re.compile(r"^metadata\[(.+)\]$")


def _metadata_filter(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """OpenAI's `metadata[key]=value` query filters. The transcoder cannot map that syntax to a field, so they
    are read from the request path it keeps in `x-envoy-original-path`."""
    query = urlsplit(metadata(context).get("x-envoy-original-path", "")).query
    return {
        match.group(1): value
        for name, value in parse_qsl(query, keep_blank_values=True)
        if (match := _METADATA_PARAM.match(name))
    }


class LlmServicer(llm_pb2_grpc.LlmServiceServicer):
    def __init__(
        self,
        models: ModelRouter,
        sessions: async_sessionmaker[AsyncSession],
        embedder: Embedder,
        resolve_media: MediaResolver | None = None,
    ) -> None:
        """`resolve_media`: the media service's placeholder resolver; without it, chat refuses placeholders."""
        self._models = models
        self._embeddings = EmbeddingsApi(embedder, models.knows)
        self._stored = StoredCompletions(sessions)
        self._chat = ChatCompletions(models.route, ConversationMemory(sessions), self._stored, resolve_media)

    @unary
    async def ListModels(
        self, request: llm_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.ListModelsResponse:
        every_provider = _wants_provider_data(context)
        models = [
            _model_message(model_id, route, provider_data=every_provider)
            for model_id, route in self._models.listed(every_provider=every_provider)
        ]
        return llm_pb2.ListModelsResponse(object="list", data=models)

    @unary
    async def GetModel(self, request: llm_pb2.GetModelRequest, context: grpc.aio.ServicerContext) -> llm_pb2.Model:
        route = self._models.route(request.model)
        return _model_message(request.model, route, provider_data=_wants_provider_data(context))

    @http_body_unary(body_reply(llm_pb2.ListModelProvidersResponse))
    async def ListModelProviders(
        self, request: llm_pb2.ListModelProvidersRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.ListModelProvidersResponse:
        return json_reply(llm_pb2.ListModelProvidersResponse, self._models.active_providers())

    @http_body_stream(_body)
    async def CreateChatCompletion(
        self, request: llm_pb2.CreateChatCompletionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[llm_pb2.CreateChatCompletionResponse]:
        pieces = self._chat.create(request.body.data, caller(context).user_id)
        first = True
        async for content_type, data in pieces:
            if first and content_type == "text/event-stream":
                await context.send_initial_metadata((("cache-control", "no-cache"),))
            first = False
            yield _body(content_type, data)

    @http_body_stream(_embedding_body)
    async def CreateEmbedding(
        self, request: llm_pb2.CreateEmbeddingRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[llm_pb2.CreateEmbeddingResponse]:
        async for piece in self._embeddings.create(request.body.data):
            yield _embedding_body("application/json", piece)

    @http_body_unary(body_reply(llm_pb2.ListChatCompletionsResponse))
    async def ListChatCompletions(
        self, request: llm_pb2.ListChatCompletionsRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.ListChatCompletionsResponse:
        listed = await self._stored.list_completions(
            caller(context).user_id, _page_request(request), model=request.model or None,
            metadata=_metadata_filter(context),
        )
        return json_reply(llm_pb2.ListChatCompletionsResponse, listed)

    @http_body_unary(body_reply(llm_pb2.GetChatCompletionResponse))
    async def GetChatCompletion(
        self, request: llm_pb2.GetChatCompletionRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.GetChatCompletionResponse:
        completion = await self._stored.get(caller(context).user_id, request.completion_id)
        return json_reply(llm_pb2.GetChatCompletionResponse, completion)

    @http_body_unary(body_reply(llm_pb2.ListChatCompletionMessagesResponse))
    async def ListChatCompletionMessages(
        self, request: llm_pb2.ListChatCompletionMessagesRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.ListChatCompletionMessagesResponse:
        listed = await self._stored.list_messages(caller(context).user_id, request.completion_id,
                                                  _page_request(request))
        return json_reply(llm_pb2.ListChatCompletionMessagesResponse, listed)

    @http_body_unary(body_reply(llm_pb2.UpdateChatCompletionResponse))
    async def UpdateChatCompletion(
        self, request: llm_pb2.UpdateChatCompletionRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.UpdateChatCompletionResponse:
        completion = await self._stored.update(caller(context).user_id, request.completion_id, request.body.data)
        return json_reply(llm_pb2.UpdateChatCompletionResponse, completion)

    @unary
    async def DeleteChatCompletion(
        self, request: llm_pb2.DeleteChatCompletionRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.DeleteChatCompletionResponse:
        await self._stored.delete(caller(context).user_id, request.completion_id)
        return llm_pb2.DeleteChatCompletionResponse(
            id=request.completion_id, object="chat.completion.deleted", deleted=True
        )
