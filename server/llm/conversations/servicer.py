"""gRPC transport for jan.llm.v1.ConversationService: decode, call the domain, encode."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import struct_pb2

from server.core.pagination import PageRequest, list_fields
from server.core.rpc import caller, unary
from server.gen.jan.llm.v1 import conversations_pb2 as pb
from server.gen.jan.llm.v1 import conversations_pb2_grpc
from server.llm.conversations.service import ConversationService
from server.llm.conversations.store import Conversation, ConversationItem


def conversation_message(conversation: Conversation) -> pb.Conversation:
    return pb.Conversation(
        id=conversation.id,
        object="conversation",
        created_at=int(conversation.created_at.timestamp()),
        title=conversation.title,
        metadata=conversation.metadata_ or {},
        project_id=conversation.project_id,
        referrer=conversation.referrer,
    )


def item_message(item: ConversationItem) -> pb.ConversationItem:
    message = pb.ConversationItem(
        id=item.id,
        object="conversation.item",
        type=item.type,
        status=item.status,
        role=item.role,
        call_id=item.call_id,
        name=item.name,
        arguments=item.arguments,
        output=item.output,
        created_at=int(item.created_at.timestamp()),
    )
    if item.content is not None:
        message.content.CopyFrom(_json_list(item.content))
    return message


def _json_list(values: Sequence[object]) -> struct_pb2.ListValue:
    listed = struct_pb2.ListValue()
    listed.extend(values)
    return listed


class ConversationServicer(conversations_pb2_grpc.ConversationServiceServicer):
    def __init__(self, conversations: ConversationService) -> None:
        self._conversations = conversations

    @unary
    async def CreateConversation(
        self, request: pb.CreateConversationRequest, context: grpc.aio.ServicerContext
    ) -> pb.Conversation:
        conversation = await self._conversations.create(caller(context).user_id, request.body.data)
        return conversation_message(conversation)

    @unary
    async def GetConversation(
        self, request: pb.GetConversationRequest, context: grpc.aio.ServicerContext
    ) -> pb.Conversation:
        conversation = await self._conversations.get(caller(context).user_id, request.conversation_id)
        return conversation_message(conversation)

    @unary
    async def UpdateConversation(
        self, request: pb.UpdateConversationRequest, context: grpc.aio.ServicerContext
    ) -> pb.Conversation:
        conversation = await self._conversations.update(
            caller(context).user_id, request.conversation_id, request.body.data
        )
        return conversation_message(conversation)

    @unary
    async def DeleteConversation(
        self, request: pb.DeleteConversationRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteConversationResponse:
        await self._conversations.delete(caller(context).user_id, request.conversation_id)
        return pb.DeleteConversationResponse(id=request.conversation_id, object="conversation.deleted", deleted=True)

    @unary
    async def ListConversations(
        self, request: pb.ListConversationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListConversationsResponse:
        user_id = caller(context).user_id
        page = await self._conversations.list_conversations(
            user_id, PageRequest.from_message(request), project_id=request.project_id, referrer=request.referrer
        )
        return pb.ListConversationsResponse(
            data=[conversation_message(c) for c in page.rows], **list_fields(page)
        )

    @unary
    async def CreateConversationItems(
        self, request: pb.CreateConversationItemsRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateConversationItemsResponse:
        items = await self._conversations.add_items(
            caller(context).user_id, request.conversation_id, request.body.data
        )
        return pb.CreateConversationItemsResponse(
            object="list",
            data=[item_message(item) for item in items],
            first_id=items[0].id,
            last_id=items[-1].id,
            has_more=False,
        )

    @unary
    async def ListConversationItems(
        self, request: pb.ListConversationItemsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListConversationItemsResponse:
        user_id = caller(context).user_id
        page = await self._conversations.list_items(user_id, request.conversation_id, PageRequest.from_message(request))
        return pb.ListConversationItemsResponse(
            data=[item_message(item) for item in page.rows], **list_fields(page)
        )

    @unary
    async def GetConversationItem(
        self, request: pb.GetConversationItemRequest, context: grpc.aio.ServicerContext
    ) -> pb.ConversationItem:
        item = await self._conversations.get_item(caller(context).user_id, request.conversation_id, request.item_id)
        return item_message(item)

    @unary
    async def DeleteConversationItem(
        self, request: pb.DeleteConversationItemRequest, context: grpc.aio.ServicerContext
    ) -> pb.Conversation:
        conversation = await self._conversations.delete_item(
            caller(context).user_id, request.conversation_id, request.item_id
        )
        return conversation_message(conversation)
