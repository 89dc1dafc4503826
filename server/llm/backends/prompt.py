"""Text-level helpers any backend that generates from a raw prompt can share: chat-template rendering,
fitting stored history into the context, and stop-string matching."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from server.llm.backends.base import ChatMessage, SamplingParams
from server.llm.backends.tool_prompt import template_message, tool_definition, with_hermes_tools

# Used when a model ships no template: ChatML, the most common format among small instruct models.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class ChatTemplateError(ValueError):
    """The template rejected the conversation (e.g. roles that do not alternate): the client's fault."""


class _GenerationTag(jinja2.ext.Extension):
    """HF templates may wrap assistant turns in `{% generation %}…{% endgeneration %}`: render the body."""

    tags = {"generation"}  # noqa: RUF012 - jinja2's Extension API declares this as a class attribute

    def parse(self, parser: Any) -> Any:
        parser.stream.skip(1)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Same as HF transformers' `tojson`: templates expect non-ASCII kept as is.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _raise_exception(message: str) -> None:
    raise ChatTemplateError(message)


class ChatTemplate:
    """A model's Jinja chat template (HF `chat_template`, GGUF `tokenizer.chat_template`), rendered in a
    sandbox set up like HF transformers' and llama-cpp-python's, so prompts match theirs token for token."""

    def __init__(self, template: str | None, *, bos_token: str, eos_token: str) -> None:
        environment = ImmutableSandboxedEnvironment(
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=[_GenerationTag, jinja2.ext.loopcontrols],
        )
        environment.filters["tojson"] = _tojson
        self._template = environment.from_string(template or CHATML_TEMPLATE)
        # HF tool-use templates render `tools` and `message.tool_calls` themselves; others get them as text.
        self.knows_tools = template is not None and "tool_calls" in template and "tools" in template
        self._bos_token = bos_token
        self._eos_token = eos_token

    def render(self, messages: list[ChatMessage], params: SamplingParams | None = None) -> str:
        """The prompt text, ending with the assistant turn's opening; with the offered tools described when
        `params` enables them. Jinja templates are safe to render from several threads at once."""
        tools = None
        if self.knows_tools:
            if params is not None and params.tools_enabled:
                tools = [tool_definition(tool) for tool in params.tools]
        else:
            messages = with_hermes_tools(messages, params or SamplingParams())
        try:
            return self._template.render(
                messages=[template_message(message) for message in messages],
                tools=tools,
                bos_token=self._bos_token,
                eos_token=self._eos_token,
                add_generation_prompt=True,
                raise_exception=_raise_exception,
                strftime_now=lambda fmt: datetime.now().strftime(fmt),
            )
        except jinja2.TemplateError as error:
            raise ChatTemplateError(f"The model's chat template failed: {error}") from error


# Tokens kept free for the answer when stored conversation history must be trimmed and max_tokens is unset
# (at most a quarter of the context either way).
HISTORY_REPLY_ROOM = 512


def reply_room(params: SamplingParams, context_size: int) -> int:
    """Tokens of the context that stored history leaves to the answer."""
    return min(params.max_tokens or HISTORY_REPLY_ROOM, context_size // 4)


# For backends whose tokenizer is not ours: English averages about four characters a token, and three makes the
# estimate err long, so history trimmed by it fits.
CHARS_PER_TOKEN_ESTIMATE = 3
# A chat template's framing of one message (role markers, separators).
TOKENS_PER_MESSAGE_ESTIMATE = 8


def estimated_tokens(messages: list[ChatMessage]) -> range:
    """A stand-in for the prompt's tokens, as long as their estimated count (what drop_history_to_fit counts)."""
    chars = sum(len(m.content) + sum(len(c.arguments_json) for c in m.tool_calls) for m in messages)
    return range(chars // CHARS_PER_TOKEN_ESTIMATE + TOKENS_PER_MESSAGE_ESTIMATE * len(messages))


def drop_history_to_fit(
    messages: list[ChatMessage], history: range, count_tokens: Callable[[list[ChatMessage]], Sequence[int]], limit: int
) -> tuple[list[ChatMessage], Sequence[int]]:
    """Drops the fewest oldest messages of `history` so the prompt takes at most `limit` tokens.

    Returns the messages and their prompt tokens. When even dropping all of history is not enough, all of it is
    dropped and the caller decides (the messages the client sent are never dropped). Dropping more messages never
    makes a prompt longer, so a binary search needs about log2(len(history)) tokenizations.
    """
    tokens = count_tokens(messages)
    if len(tokens) <= limit or not history:
        return messages, tokens

    def without(dropped: int) -> list[ChatMessage]:
        return messages[: history.start] + messages[history.start + dropped :]

    low, high = 1, len(history)  # the answer lies in [low, high]: dropping `high` is the most we may do
    best = without(high)
    best_tokens = count_tokens(best)
    if len(best_tokens) > limit:
        return best, best_tokens
    while low < high:
        middle = (low + high) // 2
        candidate = without(middle)
        candidate_tokens = count_tokens(candidate)
        if len(candidate_tokens) <= limit:
            high, best, best_tokens = middle, candidate, candidate_tokens
        else:
            low = middle + 1
    return best, best_tokens


class StopStringFilter:
    """Cuts a stream of text at the first stop string, never letting any part of a stop string out.

    Text that could be the start of a stop string is held back until the next chunk proves it is not.
    """

    def __init__(self, stop: tuple[str, ...]) -> None:
        self._stop = tuple(s for s in stop if s)
        self._held = ""
        self.stopped = False

    def push(self, text: str) -> str:
        """Adds generated text; returns what is now safe to emit. After a stop string, `stopped` is True and
        everything from the stop string on is discarded."""
        if not self._stop:
            return text
        buffer = self._held + text
        cut = min((i for i in (buffer.find(s) for s in self._stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return buffer[:cut]
        hold = self._longest_partial_stop(buffer)
        self._held = buffer[len(buffer) - hold :]
        return buffer[: len(buffer) - hold]

    def flush(self) -> str:
        """The held-back tail when generation ends without completing a stop string."""
        held, self._held = self._held, ""
        return held

    def _longest_partial_stop(self, buffer: str) -> int:
        """Length of the longest suffix of `buffer` that is a proper prefix of some stop string."""
        longest = 0
        for stop in self._stop:
            for length in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:length]):
                    longest = length
                    break
        return longest
