"""Chat completions that continue a stored conversation.

The prompt is the project's instruction (as the system message), the conversation's stored items, then the
messages of the request. After the answer, the request's new turn and the answer are appended in one transaction:
a completion that fails or is abandoned appends nothing, so a conversation never holds half an exchange.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.core.db import utcnow
from server.llm.backends.base import ChatMessage, ToolCall
from server.llm.conversations.items import NewItem
from server.llm.conversations.service import conversation_not_found
from server.llm.conversations.store import (
    Conversation,
    ConversationItem,
    add_items,
    get_owned_conversation,
    recent_items,
)
from server.llm.conversations.titles import title_from_text
from server.llm.projects.store import get_owned_project

TEXT_PART_TYPES = ("input_text", "output_text", "text")


@dataclass(frozen=True)
class ConversationTurn:
    """One chat completion inside a conversation: its prompt, and what it appends once answered."""

    conversation_id: str
    title: str | None
    messages: list[ChatMessage]
    history: range  # the stored items in `messages`: the backend may drop them oldest-first to fit
    new_messages: list[ChatMessage]
    first_user_text: str | None  # of the stored history, for titling an untitled conversation


class ConversationMemory:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def open(
        self,
        user_id: str,
        conversation_id: str,
        request_messages: list[ChatMessage],
        context_size: int,
        *,
        with_images: bool = False,
    ) -> ConversationTurn:
        """`with_images`: whether stored images go into the prompt (for a model with vision)."""
        async with self._sessions() as session:
            conversation = await get_owned_conversation(session, user_id, conversation_id)
            if conversation is None:
                raise conversation_not_found(conversation_id, param="conversation")
            instruction = await _project_instruction(session, user_id, conversation)
            # Every item takes several prompt tokens, so more items than the context has tokens can never fit.
            items = await recent_items(session, conversation, context_size)
        history = _prompt_messages(items, with_images)
        system = [ChatMessage(role="system", content=instruction)] if instruction else []
        first_user = next((m.content for m in history if m.role == "user"), None)
        return ConversationTurn(
            conversation_id=conversation.id,
            title=conversation.title,
            messages=[*system, *history, *request_messages],
            history=range(len(system), len(system) + len(history)),
            new_messages=_new_turn(request_messages),
            first_user_text=first_user,
        )

    async def append(
        self, user_id: str, turn: ConversationTurn, answer: str, calls: list[ToolCall], finish_reason: str
    ) -> dict[str, Any]:
        """Stores the turn and the answer (its text as a message, its tool calls as `function_call` items);
        returns the `conversation` field of the reply: `{id, title}`."""
        async with self._sessions.begin() as session:
            conversation = await get_owned_conversation(session, user_id, turn.conversation_id)
            if conversation is None:  # deleted while the answer was generated
                raise conversation_not_found(turn.conversation_id, param="conversation")
            # An answer cut off by max_tokens is kept, marked as OpenAI marks such output.
            answer_status = "incomplete" if finish_reason == "length" else "completed"
            items = [_new_item(message) for message in turn.new_messages]
            if answer or not calls:
                items.append(_new_item(ChatMessage(role="assistant", content=answer), answer_status))
            items.extend(
                NewItem(type="function_call", call_id=call.id, name=call.name, arguments=call.arguments_json)
                for call in calls
            )
            await add_items(session, conversation, items)
            if conversation.title is None:
                new_user = next((m.content for m in turn.new_messages if m.role == "user"), None)
                conversation.title = title_from_text(turn.first_user_text or new_user or "")
            conversation.updated_at = utcnow()
            result: dict[str, Any] = {"id": conversation.id, "title": conversation.title}
        return result


async def _project_instruction(session: AsyncSession, user_id: str, conversation: Conversation) -> str | None:
    if conversation.project_id is None:
        return None
    project = await get_owned_project(session, user_id, conversation.project_id)
    return project.instruction if project is not None else None


def _new_turn(request_messages: list[ChatMessage]) -> list[ChatMessage]:
    """What the request adds to the conversation: its messages after its last assistant message, except system
    messages (they instruct this request, as the project's instruction does for all of them)."""
    last_assistant = max((i for i, m in enumerate(request_messages) if m.role == "assistant"), default=-1)
    return [m for m in request_messages[last_assistant + 1 :] if m.role != "system"]


def _prompt_messages(items: list[ConversationItem], with_images: bool) -> list[ChatMessage]:
    """Stored items as prompt messages: `function_call` items join the assistant message before them (one turn
    may call several tools), as `tool_calls`."""
    messages: list[ChatMessage] = []
    for item in items:
        if item.type == "function_call":
            call = ToolCall(item.call_id or "", item.name or "", item.arguments or "{}")
            if messages and messages[-1].role == "assistant":
                messages[-1] = replace(messages[-1], tool_calls=(*messages[-1].tool_calls, call))
            else:
                messages.append(ChatMessage(role="assistant", content="", tool_calls=(call,)))
        elif (message := _prompt_message(item, with_images)) is not None:
            messages.append(message)
    return messages


def _prompt_message(item: ConversationItem, with_images: bool) -> ChatMessage | None:
    """A stored item (other than a function call) as a prompt message; None for items with nothing the model can
    read (e.g. only images, for a model without vision)."""
    if item.type == "function_call_output":
        return ChatMessage(role="tool", content=item.output or "", tool_call_id=item.call_id)
    if item.type != "message" or item.role is None:
        return None
    texts = [
        part.get("text") if part.get("type") in TEXT_PART_TYPES else part.get("refusal")
        for part in item.content or ()
    ]
    text = "\n".join(t for t in texts if isinstance(t, str))
    images = tuple(
        part["image_url"] for part in item.content or () if part.get("type") == "input_image" and "image_url" in part
    ) if with_images and item.role == "user" else ()
    if not (text or images):
        return None
    role = {"developer": "system"}.get(item.role, item.role)
    if role not in ("system", "user", "assistant"):
        return None
    return ChatMessage(role=role, content=text, images=images)  # type: ignore[arg-type]


def _new_item(message: ChatMessage, status: str = "completed") -> NewItem:
    if message.role == "tool":
        return NewItem(type="function_call_output", status=status, call_id=message.tool_call_id,
                       output=message.content)
    if message.role == "assistant":
        return NewItem(type="message", status=status, role="assistant",
                       content=[{"type": "output_text", "text": message.content, "annotations": []}])
    # Images are kept as sent (placeholders stay placeholders: their presigned URLs would expire).
    parts: list[dict[str, Any]] = []
    if message.content or not message.images:
        parts.append({"type": "input_text", "text": message.content})
    parts.extend({"type": "input_image", "image_url": url, "detail": "auto"} for url in message.images)
    return NewItem(type="message", status=status, role=message.role, content=parts)
