"""The routing pass of `tool_choice: "auto"` (server/llm/backends/tool_router.py): prompt, labels and outcome."""

from __future__ import annotations

from server.llm.backends.base import ChatMessage, NamedTool, SamplingParams, ToolCall, ToolSpec
from server.llm.backends.tool_router import routes, routing_pass

OBJECT = {"type": "object", "properties": {}}
SEARCH = ToolSpec("google_search", "Search the web with Google. Returns organic results, snippets and more.", OBJECT)
PYTHON = ToolSpec("python_exec", None, OBJECT)
AUTO = SamplingParams(tools=(SEARCH, PYTHON))


def test_only_auto_turns_with_tools_are_routed() -> None:
    assert routes(AUTO)
    assert not routes(SamplingParams(tools=(SEARCH,), tool_choice="required"))
    assert not routes(SamplingParams(tools=(SEARCH,), tool_choice=NamedTool("google_search")))
    assert not routes(SamplingParams(tools=(SEARCH,), tool_choice="none"))
    assert not routes(SamplingParams())


def test_the_routing_prompt_lists_the_tools_and_asks_about_the_last_user_message() -> None:
    messages = [ChatMessage("system", "Be brief."), ChatMessage("user", "Hi"), ChatMessage("assistant", "Hello"),
                ChatMessage("user", "What is 2**100?")]
    routing = routing_pass(messages, AUTO)
    assert routing is not None and routing.labels == ("google_search", "python_exec", "none")
    system, user = routing.messages
    assert "- google_search: Search the web with Google.\n" in system.content  # first sentence only
    assert "- python_exec: \n" in system.content and user.content == "What is 2**100?"
    assert routing.gbnf() == 'root ::= "google_search" | "python_exec" | "none"'


def test_the_answer_forces_the_chosen_tool_or_no_tool() -> None:
    routing = routing_pass([ChatMessage("user", "2**100?")], AUTO)
    assert routing is not None
    assert routing.routed(AUTO, "python_exec").tool_choice == NamedTool("python_exec")
    assert routing.routed(AUTO, "none").tool_choice == "none"
    assert routing.routed(AUTO, "").tool_choice == "none"  # cut short: answer


def test_a_tool_named_none_gets_another_no_tool_label() -> None:
    routing = routing_pass([ChatMessage("user", "x")], SamplingParams(tools=(ToolSpec("none", None, OBJECT),)))
    assert routing is not None and routing.labels == ("none", "no_tool")
    assert routing.routed(AUTO, "none").tool_choice == NamedTool("none")


def test_after_tool_results_the_turn_answers() -> None:
    call = ToolCall("call_1", "python_exec", "{}")
    messages = [ChatMessage("user", "2**100?"), ChatMessage("assistant", "", tool_calls=(call,)),
                ChatMessage("tool", "1267650600228229401496703205376", tool_call_id="call_1")]
    assert routing_pass(messages, AUTO) is None
    assert routing_pass([ChatMessage("system", "no user message")], AUTO) is None
