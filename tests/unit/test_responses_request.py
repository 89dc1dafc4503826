"""Parsing a create-response body (OpenAI's forms and the original Jan Server's), and items ↔ chat messages."""

from __future__ import annotations

import json
from typing import Any

import pytest

from server.core.errors import ApiError
from server.responses.items import chat_messages, to_conversation
from server.responses.request import is_own_mcp_url, parse_create_request

PUBLIC_URL = "http://127.0.0.1:8000"


def parse(**fields: Any) -> Any:
    return parse_create_request(json.dumps({"model": "m", "input": "Hi", **fields}).encode(), PUBLIC_URL)


def test_a_string_input_is_one_user_message_with_a_fresh_id() -> None:
    [item] = parse().input
    assert item["id"].startswith("msg_")
    assert {k: v for k, v in item.items() if k != "id"} == {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}], "status": "completed"
    }


def test_items_copied_from_an_earlier_output_get_new_ids() -> None:
    output = [{"id": "fc_old", "type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
              {"type": "function_call_output", "call_id": "c1", "output": "x"},
              {"id": "mcp_old", "type": "mcp_call", "name": "python_exec", "arguments": "{}", "output": "1",
               "server_label": "jan"}]
    items = parse(input=output).input
    assert [item["id"][:3] for item in items] == ["fc_", "fco", "mcp"] and items[0]["id"] != "fc_old"


def test_tools_in_every_accepted_form() -> None:
    request = parse(tools=[
        {"type": "function", "name": "weather", "parameters": {"type": "object"}},
        {"type": "function", "function": {"name": "legacy", "description": "chat shape"}},
        "python_exec",
        {"type": "mcp", "server_label": "jan", "server_url": "http://localhost:8000/v1/mcp",
         "allowed_tools": {"tool_names": ["scrape"]}, "require_approval": "never"},
    ])
    assert [tool.name for tool in request.function_tools] == ["weather", "legacy"]
    assert request.mcp_tool_names == ["python_exec"]
    assert request.mcp_servers[0].allowed_tools == ("scrape",) and request.tools_given
    assert not parse().tools_given and parse(tools=[]).tools_given


@pytest.mark.parametrize(
    ("raw", "mode", "name"),
    [(None, "auto", None), ("none", "none", None), ("required", "required", None),
     ("python_exec", "named", "python_exec"), ({"type": "function", "name": "f"}, "named", "f"),
     ({"type": "function", "function": {"name": "f"}}, "named", "f"),
     ({"type": "mcp", "server_label": "jan", "name": "scrape"}, "named", "scrape"),
     ({"type": "mcp", "server_label": "jan"}, "required", None)],
)
def test_tool_choice_forms(raw: Any, mode: str, name: str | None) -> None:
    choice = parse(tool_choice=raw).tool_choice
    assert (choice.mode, choice.name) == (mode, name)


def test_text_format_becomes_response_format() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    request = parse(text={"format": {"type": "json_schema", "name": "n", "schema": schema, "strict": True}})
    assert request.response_format == {"type": "json_schema",
                                       "json_schema": {"name": "n", "schema": schema, "strict": True}}
    assert parse(text={"format": {"type": "json_object"}}).response_format == {"type": "json_object"}
    assert parse().settings["text"] == {"format": {"type": "text"}}


def test_conversation_as_id_or_object() -> None:
    assert parse(conversation="conv_a").conversation_id == "conv_a"
    assert parse(conversation={"id": "conv_b"}).conversation_id == "conv_b"


@pytest.mark.parametrize(
    ("url", "own"),
    [("http://127.0.0.1:8000/v1/mcp", True), ("http://localhost:8000/mcp/", True),
     ("http://127.0.0.1:8001/v1/mcp", False), ("https://mcp.example.com:8000/v1/mcp", False),
     ("http://127.0.0.1:8000/v1/other", False), ("file:///v1/mcp", False)],
)
def test_only_this_servers_mcp_endpoint_is_accepted(url: str, own: bool) -> None:
    assert is_own_mcp_url(url, PUBLIC_URL) is own


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"model": None}, "model"), ({"input": []}, "input"), ({"top_p": 2}, "top_p"),
     ({"tools": [{"type": "mcp", "server_label": "x", "server_url": "http://127.0.0.1:8000/v1/mcp",
                  "require_approval": "always"}]}, "tools[0].require_approval"),
     ({"tools": [{"type": "function", "name": "a"}, {"type": "function", "name": "a"}]}, "tools[1].name"),
     ({"tool_choice": {"type": "allowed_tools"}}, "tool_choice"),
     ({"metadata": {"k": 1}}, "metadata"), ({"max_tool_calls": -1}, "max_tool_calls"),
     ({"input": [{"type": "reasoning"}]}, "input[0].type"),
     ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema")],
)
def test_invalid_fields_are_400_naming_them(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(ApiError) as raised:
        parse(**fields)
    assert raised.value.status == 400 and raised.value.param == param


def test_items_become_chat_messages_one_assistant_turn_per_group_of_calls() -> None:
    items = [
        {"id": "m1", "type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be nice"}]},
        {"id": "m2", "type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "Let me check", "annotations": []}]},
        {"id": "fc1", "type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"id": "mcp1", "type": "mcp_call", "name": "g", "arguments": "{}", "output": "out", "error": None},
        {"id": "o1", "type": "function_call_output", "call_id": "c1", "output": "done"},
        {"id": "fc2", "type": "function_call", "call_id": "c2", "name": "f", "arguments": "{}"},
        {"id": "o2", "type": "function_call_output", "call_id": "c2", "output": "again"},
    ]
    assert chat_messages(items) == [
        {"role": "system", "content": "Be nice"},
        {"role": "assistant", "content": "Let me check", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "mcp1", "type": "function", "function": {"name": "g", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "mcp1", "content": "out"},
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c2", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c2", "content": "again"},
    ]


def test_an_mcp_call_is_a_call_and_its_output_in_a_conversation() -> None:
    rows = to_conversation([{"id": "mcp1", "type": "mcp_call", "name": "g", "arguments": "{}", "output": None,
                             "error": "boom", "status": "failed"}])
    assert [(row.type, row.call_id, row.output) for row in rows] == [("function_call", "mcp1", None),
                                                                      ("function_call_output", "mcp1", "boom")]
