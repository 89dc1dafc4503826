"""Conversations domain: create, read, update and delete conversations and their items. No gRPC here.

Everything is scoped to the calling user; another user's conversation is reported exactly like a missing one
(404). Each call is one transaction and validates its whole request before writing, so a rejected request
stores nothing.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.core.errors import ApiError, invalid_request
from server.core.json_body import optional_str, parse_metadata, parse_object
from server.core.pagination import Page, PageRequest, paginate
from server.llm.conversations import store
from server.llm.conversations.items import NewItem, first_user_text, parse_items
from server.llm.conversations.store import Conversation, ConversationItem
from server.llm.conversations.titles import title_from_text
from server.llm.projects.store import get_owned_project

MAX_TITLE_CHARS = 256
MAX_REFERRER_CHARS = 64
_CONVERSATION_ID = re.compile(r"^conv_[a-z0-9]+$")
_ITEM_ID = re.compile(r"^msg_[a-z0-9]+$")
_PROJECT_ID = re.compile(r"^proj_[a-z0-9]+$")


def _checked_id(value: str, pattern: re.Pattern[str], param: str, prefix: str) -> str:
    if not pattern.match(value):
        raise invalid_request(f"'{param}' must look like {prefix}_ followed by lowercase letters and digits: "
                              f"{value!r}", param=param, code="invalid_id")
    return value


def conversation_not_found(conversation_id: str, param: str | None = None) -> ApiError:
    return ApiError(404, f"Conversation '{conversation_id}' not found", code="conversation_not_found", param=param)


def item_not_found(item_id: str) -> ApiError:
    return ApiError(404, f"Item '{item_id}' not found in this conversation", code="item_not_found")


def item_id_in_use(item_id: str | None, param: str) -> ApiError:
    what = f"Item id '{item_id}' is" if item_id else "An item id given is"
    return ApiError(409, f"{what} already in use", code="item_id_in_use", param=param)


def _title(payload: dict[str, Any]) -> str | None:
    """Blank means none."""
    title = optional_str(payload, "title", max_length=MAX_TITLE_CHARS)
    return title if title and title.strip() else None


def _referrer(payload: dict[str, Any]) -> str | None:
    return optional_str(payload, "referrer", max_length=MAX_REFERRER_CHARS) or None


def _project_id(payload: dict[str, Any]) -> str | None:
    """null or "" means no project."""
    value = optional_str(payload, "project_id")
    return _checked_id(value, _PROJECT_ID, "project_id", "proj") if value else None


class ConversationService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def create(self, user_id: str, body: bytes) -> Conversation:
        payload = parse_object(body)
        title, referrer = _title(payload), _referrer(payload)
        metadata = parse_metadata(payload.get("metadata"))
        project_id = _project_id(payload)
        raw_items = payload.get("items")
        items = parse_items(raw_items) if raw_items not in (None, []) else []
        if title is None and (text := first_user_text(items)):
            title = title_from_text(text)
        async with self._sessions.begin() as session:
            conversation = await store.add_conversation(
                session, user_id, title=title, metadata=metadata, referrer=referrer
            )
            if project_id is not None:
                await self._attach(session, conversation, user_id, project_id)
            await self._append(session, conversation, items)
        return conversation

    async def get(self, user_id: str, conversation_id: str) -> Conversation:
        async with self._sessions() as session:
            return await self._owned(session, user_id, conversation_id)

    async def update(self, user_id: str, conversation_id: str, body: bytes) -> Conversation:
        """Changes the fields present in the body; the others stay as they are."""
        _checked_id(conversation_id, _CONVERSATION_ID, "conversation_id", "conv")
        payload = parse_object(body)
        values: dict[str, Any] = {}
        if "title" in payload:
            values["title"] = _title(payload)
        if "metadata" in payload:
            values["metadata_"] = parse_metadata(payload["metadata"])
        if "referrer" in payload:
            values["referrer"] = _referrer(payload)
        project_id = _project_id(payload)
        if "project_id" in payload and project_id is None:
            values["project_id"] = None
        async with self._sessions.begin() as session:
            conversation = await store.update_owned_conversation(session, user_id, conversation_id, values)
            if conversation is None:
                raise conversation_not_found(conversation_id)
            if project_id is not None:
                await self._attach(session, conversation, user_id, project_id)
        return conversation

    async def delete(self, user_id: str, conversation_id: str) -> None:
        _checked_id(conversation_id, _CONVERSATION_ID, "conversation_id", "conv")
        async with self._sessions.begin() as session:
            if not await store.delete_owned_conversation(session, user_id, conversation_id):
                raise conversation_not_found(conversation_id)

    async def list_conversations(
        self, user_id: str, page: PageRequest, *, project_id: str = "", referrer: str = ""
    ) -> Page[Conversation]:
        if project_id:
            _checked_id(project_id, _PROJECT_ID, "project_id", "proj")
        statement = store.owned_conversations(user_id, project_id=project_id or None, referrer=referrer or None)
        async with self._sessions() as session:
            return await paginate(session, statement, pk=Conversation.pk, public_id=Conversation.id, page=page)

    async def add_items(self, user_id: str, conversation_id: str, body: bytes) -> list[ConversationItem]:
        """Appends 1-20 items; an untitled conversation is titled from the first user message among them."""
        _checked_id(conversation_id, _CONVERSATION_ID, "conversation_id", "conv")
        payload = parse_object(body)
        if payload.get("items") is None:
            raise invalid_request("'items' is required", param="items")
        items = parse_items(payload["items"])
        text = first_user_text(items)
        async with self._sessions.begin() as session:
            conversation = await store.touch_owned_conversation(
                session, user_id, conversation_id, title_if_untitled=title_from_text(text) if text else None
            )
            if conversation is None:
                raise conversation_not_found(conversation_id)
            return await self._append(session, conversation, items)

    async def list_items(
        self, user_id: str, conversation_id: str, page: PageRequest
    ) -> Page[ConversationItem]:
        async with self._sessions() as session:
            conversation = await self._owned(session, user_id, conversation_id)
            return await paginate(
                session, store.items_of(conversation), pk=ConversationItem.pk, public_id=ConversationItem.id,
                page=page,
            )

    async def get_item(self, user_id: str, conversation_id: str, item_id: str) -> ConversationItem:
        _checked_id(conversation_id, _CONVERSATION_ID, "conversation_id", "conv")
        _checked_id(item_id, _ITEM_ID, "item_id", "msg")
        async with self._sessions() as session:
            conversation = await self._owned(session, user_id, conversation_id)
            item = await store.get_item(session, conversation, item_id)
        if item is None:
            raise item_not_found(item_id)
        return item

    async def delete_item(self, user_id: str, conversation_id: str, item_id: str) -> Conversation:
        """Deletes one item and returns its conversation (what OpenAI and the original answer)."""
        _checked_id(conversation_id, _CONVERSATION_ID, "conversation_id", "conv")
        _checked_id(item_id, _ITEM_ID, "item_id", "msg")
        async with self._sessions.begin() as session:
            conversation = await store.touch_owned_conversation(session, user_id, conversation_id)
            if conversation is None:
                raise conversation_not_found(conversation_id)
            if not await store.delete_item(session, conversation, item_id):
                raise item_not_found(item_id)
        return conversation

    async def _owned(self, session: AsyncSession, user_id: str, conversation_id: str) -> Conversation:
        _checked_id(conversation_id, _CONVERSATION_ID, "conversation_id", "conv")
        conversation = await store.get_owned_conversation(session, user_id, conversation_id)
        if conversation is None:
            raise conversation_not_found(conversation_id)
        return conversation

    async def _attach(self, session: AsyncSession, conversation: Conversation, user_id: str, project_id: str) -> None:
        if await get_owned_project(session, user_id, project_id) is None:
            raise ApiError(404, f"Project '{project_id}' not found", code="project_not_found", param="project_id")
        conversation.project_id = project_id
        await session.flush()

    async def _append(
        self, session: AsyncSession, conversation: Conversation, items: list[NewItem]
    ) -> list[ConversationItem]:
        if not items:
            return []
        taken = await store.taken_item_ids(session, [item.id for item in items if item.id is not None])
        for index, item in enumerate(items):
            if item.id in taken:
                raise item_id_in_use(item.id, f"items[{index}].id")
        try:
            return await store.add_items(session, conversation, items)
        except IntegrityError:
            # Another request took one of the given ids between the check and the insert.
            raise item_id_in_use(None, "items") from None
