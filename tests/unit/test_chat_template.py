"""Chat templates read from a tokenizer config (the triton backend's): Qwen2.5's own template from triton_models/
renders prompts as HF transformers does, and the config's forms (AddedToken objects, named templates, bare Jinja
files, inline templates) and mistakes are handled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.llm.backends.base import ChatMessage, SamplingParams, ToolCall, ToolSpec
from server.llm.backends.chat_template import ChatTemplateConfigError, load_chat_template
from server.llm.backends.prompt import ChatTemplateError

QWEN = Path(__file__).resolve().parents[2] / "triton_models" / "qwen2.5-0.5b-instruct" / "tokenizer_config.json"
QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def test_qwen_template_adds_its_default_system_prompt_and_the_generation_prompt() -> None:
    loaded = load_chat_template(str(QWEN))
    assert loaded.eos_token == "<|im_end|>" and loaded.source == str(QWEN)
    assert loaded.template.render([ChatMessage("user", "Hi")]) == (
        f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_qwen_template_renders_a_conversation_with_tool_calls_and_results() -> None:
    template = load_chat_template(str(QWEN)).template
    call = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    messages = [
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "Weather in Paris?"),
        ChatMessage("assistant", "", tool_calls=(call,)),
        ChatMessage("tool", '{"c": 21}', tool_call_id="call_1"),
    ]
    tool = ToolSpec("get_weather", "The weather", {"type": "object", "properties": {"city": {"type": "string"}}})
    prompt = template.render(messages, SamplingParams(tools=(tool,)))
    assert prompt.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n\n")
    assert '{"type": "function", "function": {"name": "get_weather", "description": "The weather"' in prompt
    assert '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' \
        '<|im_end|>\n' in prompt
    assert prompt.endswith(
        '<|im_start|>user\n<tool_response>\n{"c": 21}\n</tool_response><|im_end|>\n<|im_start|>assistant\n'
    )


def test_special_tokens_as_added_token_objects_and_named_templates(tmp_path: Path) -> None:
    config = {
        "bos_token": {"content": "<s>", "lstrip": False},
        "eos_token": {"content": "</s>"},
        "chat_template": [
            {"name": "tool_use", "template": "TOOLS"},
            {"name": "default", "template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}"
                                            "{% endfor %}"},
        ],
    }
    path = tmp_path / "tokenizer_config.json"
    path.write_text(json.dumps(config))
    loaded = load_chat_template(str(path))
    assert loaded.eos_token == "</s>"
    assert loaded.template.render([ChatMessage("user", "a"), ChatMessage("assistant", "b")]) == "<s>a</s>b</s>"


def test_inline_and_bare_jinja_templates(tmp_path: Path) -> None:
    inline = load_chat_template("unused", inline="{{ messages[0].content }}|{{ eos_token }}", eos_token="<e>")
    assert inline.source == "inline" and inline.eos_token == "<e>"
    assert inline.template.render([ChatMessage("user", "x")]) == "x|<e>"
    jinja = tmp_path / "chat_template.jinja"
    jinja.write_text("{{ strftime_now('%Y') | length }}{% if add_generation_prompt %}>{% endif %}")
    assert load_chat_template(str(jinja)).template.render([ChatMessage("user", "x")]) == "4>"


def test_a_template_refusing_the_conversation_is_the_clients_error(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer_config.json"
    path.write_text(json.dumps({"chat_template": "{% if messages[0].role != 'user' %}"
                                                 "{{ raise_exception('Conversation must start with a user') }}"
                                                 "{% endif %}ok"}))
    template = load_chat_template(str(path)).template
    assert template.render([ChatMessage("user", "x")]) == "ok"
    with pytest.raises(ChatTemplateError, match="must start with a user"):
        template.render([ChatMessage("assistant", "x")])


def test_the_sandbox_refuses_unsafe_templates(tmp_path: Path) -> None:
    path = tmp_path / "t.jinja"
    path.write_text("{{ messages.__class__.__mro__ }}")
    with pytest.raises(ChatTemplateError):
        load_chat_template(str(path)).template.render([ChatMessage("user", "x")])


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read"), ("{not json", "is not JSON"), ("[]", "not a tokenizer config"),
     ('{"eos_token": "x"}', "has no chat_template")],
)
def test_a_missing_or_broken_config_is_a_load_error(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "tokenizer_config.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ChatTemplateConfigError, match=message):
        load_chat_template(str(path))
