"""`tool_choice: "auto"` for models too small to decide on their own whether to call a tool.

Offered tools in the prompt and decoded under a grammar that allows a call or an answer, SmolLM2-135M answers in
prose every time (measured, with both the Hermes and the APIGen tool prompts). Asked instead a question it can
answer, which of these tools helps or none, under a grammar of exactly those names, it picks `python_exec` for
calculations and `none` for small talk (and errs sometimes, as a 135M model will). So `auto` on such a model runs in
two passes: this routing pass of a few tokens, then the turn itself with the chosen tool forced, or with no tools.

Once tool results follow the last user message, the turn answers: asked whether the results suffice, the model
names the same tool again every time, so on these models `auto` makes one round of calls per user turn.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from server.llm.backends.base import ChatMessage, NamedTool, SamplingParams

# Longest tool description the routing prompt shows: the first sentence is what a small model can use.
_DESCRIPTION_CHARS = 160


@dataclass(frozen=True)
class RoutingPass:
    """The routing prompt and the labels the model must answer with (tool names, then the no-tool label)."""

    messages: list[ChatMessage]
    labels: tuple[str, ...]

    @property
    def no_tool(self) -> str:
        return self.labels[-1]

    def gbnf(self) -> str:
        return "root ::= " + " | ".join(json.dumps(label) for label in self.labels)

    def routed(self, params: SamplingParams, answer: str) -> SamplingParams:
        """The turn's parameters once the model answered `answer`."""
        choice = answer.strip()
        if choice in self.labels[:-1]:
            return dataclasses.replace(params, tool_choice=NamedTool(choice))
        return dataclasses.replace(params, tool_choice="none")


def routes(params: SamplingParams) -> bool:
    return params.tools_enabled and params.tool_choice == "auto"


def routing_pass(messages: list[ChatMessage], params: SamplingParams) -> RoutingPass | None:
    """The routing pass of an `auto` turn, or None when the turn must answer: tool results follow the last user
    message (see the module's doc)."""
    last_user = next((m for m in reversed(messages) if m.role == "user"), None)
    if last_user is None or messages[-1].role == "tool":
        return None
    names = tuple(tool.name for tool in params.tools)
    no_tool = "none" if "none" not in names else "no_tool"
    lines = [f"- {tool.name}: {_first_sentence(tool.description or '')}" for tool in params.tools]
    # Of the phrasings tried on ten labelled requests, this one routed nine right (the miss: a web search sent to
    # python_exec); "You are a helpful assistant with tools… If a tool helps…" routed seven.
    system = (
        "Tools:\n" + "\n".join(lines)
        + f"\nReply with the name of the tool the user's request needs, or {no_tool} if the request needs no tool."
    )
    return RoutingPass([ChatMessage("system", system), ChatMessage("user", last_user.content)], (*names, no_tool))


def answering(params: SamplingParams) -> SamplingParams:
    """A turn that must answer: tool results are in, or routing chose no tool."""
    return dataclasses.replace(params, tool_choice="none")


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    end = text.find(". ")
    sentence = text[: end + 1] if end >= 0 else text
    return sentence[:_DESCRIPTION_CHARS]
