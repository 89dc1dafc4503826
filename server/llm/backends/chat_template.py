"""A remote model's chat template, read from its Hugging Face tokenizer config, for backends that send Triton (or any
server taking raw text) a prompt we render ourselves.

The template is rendered by prompt.ChatTemplate, in a sandbox set up as HF transformers does (`raise_exception`,
`tojson`, `strftime_now`, `add_generation_prompt=True`, `bos_token`/`eos_token`), so the prompt matches what the
model was trained on and what vLLM's own OpenAI server would have built.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.llm.backends.prompt import ChatTemplate


class ChatTemplateConfigError(ValueError):
    """The template source is missing or unreadable: an operator's error, reported as the model's load failure."""


@dataclass(frozen=True)
class LoadedTemplate:
    template: ChatTemplate
    source: str  # the file, or "inline"
    eos_token: str  # the end of an assistant turn (Qwen2.5's `<|im_end|>`); empty when unknown


def _token_text(value: Any) -> str:
    """HF configs give special tokens as a string or as an AddedToken object `{"content": ...}` (or null)."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else ""


def _template_text(value: Any, source: str) -> str:
    """`chat_template` is one template, or a list of named ones (`default`, `tool_use`, ...) in some configs."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, list):
        named = {item.get("name"): item.get("template") for item in value if isinstance(item, dict)}
        chosen = named.get("default") or next(iter(named.values()), None)
        if isinstance(chosen, str) and chosen:
            return chosen
    raise ChatTemplateConfigError(f"{source} has no chat_template")


def load_chat_template(path: str, *, inline: str = "", eos_token: str = "") -> LoadedTemplate:
    """The inline template when given (with `eos_token`), else the file at `path`: a tokenizer_config.json, or a bare
    Jinja template (`chat_template.jinja`, as newer HF repositories ship it)."""
    if inline:
        return LoadedTemplate(ChatTemplate(inline, bos_token="", eos_token=eos_token), "inline", eos_token)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ChatTemplateConfigError(f"cannot read the chat template {path}: {error.strerror or error}") from error
    if not path.endswith(".json"):
        return LoadedTemplate(ChatTemplate(text, bos_token="", eos_token=eos_token), path, eos_token)
    try:
        config = json.loads(text)
    except ValueError as error:
        raise ChatTemplateConfigError(f"{path} is not JSON: {error}") from error
    if not isinstance(config, dict):
        raise ChatTemplateConfigError(f"{path} is not a tokenizer config object")
    template = _template_text(config.get("chat_template"), path)
    eos = eos_token or _token_text(config.get("eos_token"))
    bos = _token_text(config.get("bos_token"))
    return LoadedTemplate(ChatTemplate(template, bos_token=bos, eos_token=eos), path, eos)
