"""Titles for untitled conversations, from the first user message."""

from __future__ import annotations

MAX_TITLE_CHARS = 60


def title_from_text(text: str) -> str | None:
    """The text on one line, cut at a word boundary to at most 60 characters (with "..." when cut)."""
    words = " ".join(text.split())
    if not words:
        return None
    if len(words) <= MAX_TITLE_CHARS:
        return words
    cut = words[: MAX_TITLE_CHARS - 3]
    space = cut.rfind(" ")
    if space > MAX_TITLE_CHARS // 2:
        cut = cut[:space]
    return cut.rstrip(" ,.;:-") + "..."
