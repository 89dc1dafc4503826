"""Splitting a document into overlapping chunks that each fit the embedding model.

Chunks are built from whole sentences (paragraph breaks end a sentence too) up to `max_tokens` model tokens, and each
chunk after the first starts with the last sentences of the previous one, up to `overlap_tokens`, so a passage that
straddles a boundary is still whole in one chunk. A sentence longer than a chunk is cut between words.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# A sentence ends at . ! ? (optionally followed by closing quotes/brackets) before whitespace, or at a blank line.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]])\s+|\n\s*\n")
# Model tokens of the [CLS] and [SEP] a chunk is wrapped in when embedded: `count_tokens` counts them in every call.
_SPECIAL_TOKENS = 2


def split_sentences(text: str) -> list[str]:
    """The text's sentences, whitespace-trimmed, empty ones dropped."""
    return [sentence.strip() for sentence in _SENTENCE_END.split(text) if sentence and sentence.strip()]


def chunk_text(text: str, count_tokens: Callable[[str], int], max_tokens: int, overlap_tokens: int) -> list[str]:
    """Chunks of `text` of at most `max_tokens` tokens (as `count_tokens` counts a whole chunk), consecutive chunks
    sharing up to `overlap_tokens` tokens of trailing sentences. No text is lost (except the tail of a single
    whitespace-free "word" longer than a chunk, which the embedder truncates); an empty text has no chunks."""
    if not 0 <= overlap_tokens < max_tokens:
        raise ValueError("overlap_tokens must be smaller than max_tokens")

    def tokens(piece: str) -> int:
        return count_tokens(piece) - _SPECIAL_TOKENS

    budget = max_tokens - _SPECIAL_TOKENS
    pieces: list[tuple[str, int]] = []
    for sentence in split_sentences(text):
        size = tokens(sentence)
        pieces.extend(_split_long_sentence(sentence, tokens, budget) if size > budget else [(sentence, size)])

    chunks: list[str] = []
    current: list[tuple[str, int]] = []
    current_tokens = 0
    for piece, size in pieces:
        # WordPiece tokens never span whitespace, so a chunk's count is the sum of its pieces' counts.
        if current and current_tokens + size > budget:
            chunks.append(" ".join(p for p, _ in current))
            current = _overlap_tail(current, overlap_tokens, budget - size)
            current_tokens = sum(s for _, s in current)
        current.append((piece, size))
        current_tokens += size
    if current:
        chunks.append(" ".join(p for p, _ in current))
    return chunks


def _overlap_tail(pieces: list[tuple[str, int]], overlap_tokens: int, room: int) -> list[tuple[str, int]]:
    """The longest run of trailing pieces within both the overlap and the room the next piece leaves."""
    limit = min(overlap_tokens, room)
    tail: list[tuple[str, int]] = []
    total = 0
    for piece, size in reversed(pieces):
        if total + size > limit:
            break
        tail.insert(0, (piece, size))
        total += size
    return tail


def _split_long_sentence(sentence: str, tokens: Callable[[str], int], budget: int) -> list[tuple[str, int]]:
    """Cuts a sentence longer than `budget` tokens between words into pieces of at most `budget` tokens."""
    pieces: list[tuple[str, int]] = []
    words = sentence.split()
    start = 0
    while start < len(words):
        # Grow the piece a word at a time would be quadratic in tokenizer calls; bisect the end instead.
        low, high = start + 1, len(words)
        while low < high:
            middle = (low + high + 1) // 2
            if tokens(" ".join(words[start:middle])) <= budget:
                low = middle
            else:
                high = middle - 1
        piece = " ".join(words[start:low])
        pieces.append((piece, tokens(piece)))
        start = low
    return pieces
