"""Images in chat completions: resolving the media service's `data:<mime>;jan_<id>` placeholders before the
backend sees the messages (server/llm/capabilities.py refuses images for models without vision)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from server.core.errors import invalid_request
from server.core.ids import MEDIA_PLACEHOLDER
from server.llm.backends.base import BackendInfo, ChatMessage

# (user_id, JSON value, as_data_url) -> the value with every placeholder in any string replaced by a presigned URL
# or a base64 data URL; raises ApiError 400 naming an id that is unknown or not the user's.
MediaResolver = Callable[[str, Any, bool], Awaitable[Any]]


async def resolve_placeholders(
    messages: list[ChatMessage], backend: BackendInfo, user_id: str, resolve: MediaResolver | None
) -> list[ChatMessage]:
    """The messages with placeholders resolved: images in the form the backend wants them, placeholders in text as
    URLs (a text model reads a link, not kilobytes of base64)."""
    texts = [message.content for message in messages]
    images = [list(message.images) for message in messages]
    text_placeholders = any(MEDIA_PLACEHOLDER.search(text) for text in texts)
    image_placeholders = any(MEDIA_PLACEHOLDER.search(url) for urls in images for url in urls)
    if not (text_placeholders or image_placeholders):
        return messages
    if resolve is None:
        raise invalid_request(
            "The messages refer to uploaded media (data:<mime>;jan_<id>), but media is unavailable on this server",
            param="messages",
        )
    if text_placeholders:
        texts = await resolve(user_id, texts, False)
    if image_placeholders:
        images = await resolve(user_id, images, backend.image_input == "data_url")
    return [
        replace(message, content=text, images=tuple(urls))
        for message, text, urls in zip(messages, texts, images, strict=True)
    ]
