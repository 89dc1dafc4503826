"""Parsing and validating a create-response body into a typed request. Every rejection is a 400 naming `param`.

Accepted beyond OpenAI's forms, for the original Jan Server's clients: chat-shaped function tools
(`{type: "function", function: {name, …}}`) and tool choices, and a bare string in `tools` naming one of the
server's MCP tools. Unknown fields are ignored, so newer SDKs keep working.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from server.core.errors import invalid_request
from server.core.ids import new_id
from server.core.json_body import (
    optional_bool,
    optional_int,
    optional_number,
    optional_str,
    parse_metadata,
    parse_object,
    type_error,
)
from server.llm.conversations.items import parse_item

MAX_INPUT_ITEMS = 1000
MAX_TOOLS = 128
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MCP_PATHS = ("/v1/mcp", "/mcp")
ITEM_ID_PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "mcp_call": "mcp"}

ToolChoiceMode = Literal["auto", "none", "required", "named"]


@dataclass(frozen=True)
class FunctionTool:
    """A function tool as given: run server-side if its name is an MCP tool's, else returned to the caller."""

    name: str
    description: str | None
    parameters: dict[str, Any] | None
    strict: bool | None


@dataclass(frozen=True)
class McpServer:
    """OpenAI's `{type: "mcp"}` tool naming this server's own MCP endpoint; None = all its tools."""

    server_label: str
    allowed_tools: tuple[str, ...] | None


@dataclass(frozen=True)
class ToolChoice:
    mode: ToolChoiceMode
    name: str | None = None


@dataclass(frozen=True)
class ResponseRequest:
    model: str
    # Input items in OpenAI's JSON, each with its new id.
    input: list[dict[str, Any]]
    instructions: str | None = None
    # False when `tools` is absent: then every available MCP tool is offered (the original's behaviour).
    tools_given: bool = False
    function_tools: list[FunctionTool] = field(default_factory=list)
    mcp_tool_names: list[str] = field(default_factory=list)
    mcp_servers: list[McpServer] = field(default_factory=list)
    tool_choice: ToolChoice = ToolChoice("auto")
    parallel_tool_calls: bool = True
    max_tool_calls: int | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    # Chat completions' `response_format`, from `text.format`.
    response_format: dict[str, Any] | None = None
    previous_response_id: str | None = None
    conversation_id: str | None = None
    store: bool = True
    stream: bool = False
    background: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    # The request fields the response object echoes (stored with it).
    settings: dict[str, Any] = field(default_factory=dict)


def parse_create_request(body: bytes, public_url: str) -> ResponseRequest:
    payload = parse_object(body)
    model = payload.get("model")
    if model is None:
        raise invalid_request("Parameter 'model' is required", param="model", code="missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise type_error("model", "a non-empty string")
    if payload.get("input") is None:
        raise invalid_request("Parameter 'input' is required", param="input", code="missing_required_parameter")
    items = parse_input(payload["input"])
    instructions = optional_str(payload, "instructions")
    tools_raw = payload.get("tools")
    function_tools, mcp_names, mcp_servers = _parse_tools(tools_raw, public_url)
    tool_choice = _parse_tool_choice(payload.get("tool_choice"))
    store = optional_bool(payload, "store")
    stream = optional_bool(payload, "stream") or False
    background = optional_bool(payload, "background") or False
    if background and store is False:
        raise invalid_request("A background response must be stored: drop 'store: false'", param="background")
    if background and stream:
        raise invalid_request(
            "'background' together with 'stream' is not supported: poll GET /v1/responses/{id} instead",
            param="stream", code="unsupported_value",
        )
    previous = optional_str(payload, "previous_response_id") or None
    conversation = _conversation_id(payload.get("conversation"))
    if previous is not None and conversation is not None:
        raise invalid_request(
            "Give either 'previous_response_id' or 'conversation', not both", param="previous_response_id"
        )
    text, response_format = _parse_text(payload.get("text"))
    temperature = _optional_number(payload, "temperature", 0, 2)
    top_p = _optional_number(payload, "top_p", 0, 1)
    max_output_tokens = optional_int(payload, "max_output_tokens", minimum=1)
    max_tool_calls = optional_int(payload, "max_tool_calls", minimum=0)
    parallel = optional_bool(payload, "parallel_tool_calls")
    metadata = parse_metadata(payload.get("metadata"))
    settings = {
        "instructions": instructions,
        "tools": tools_raw if isinstance(tools_raw, list) else [],
        "tool_choice": payload.get("tool_choice") or "auto",
        "parallel_tool_calls": parallel is not False,
        "max_tool_calls": max_tool_calls,
        "max_output_tokens": max_output_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "text": text,
        "metadata": metadata,
        "store": store is not False,
        "truncation": "disabled",
        "user": optional_str(payload, "user"),
    }
    return ResponseRequest(
        model=model, input=items, instructions=instructions, tools_given=tools_raw is not None,
        function_tools=function_tools, mcp_tool_names=mcp_names, mcp_servers=mcp_servers, tool_choice=tool_choice,
        parallel_tool_calls=parallel is not False, max_tool_calls=max_tool_calls,
        max_output_tokens=max_output_tokens, temperature=temperature, top_p=top_p, response_format=response_format,
        previous_response_id=previous, conversation_id=conversation, store=store is not False, stream=stream,
        background=background, metadata=metadata, settings=settings,
    )


def parse_input(raw: Any) -> list[dict[str, Any]]:
    """A string (one user message) or a list of items: messages, function calls and their outputs, MCP calls.

    Items a client copies from an earlier response's `output` carry that response's ids; they get new ones.
    """
    if isinstance(raw, str):
        raw = [{"role": "user", "content": raw}]
    if not isinstance(raw, list):
        raise type_error("input", "a string or an array of items")
    if not raw:
        raise invalid_request("'input' must hold at least one item", param="input")
    if len(raw) > MAX_INPUT_ITEMS:
        raise invalid_request(f"'input' takes at most {MAX_INPUT_ITEMS} items", param="input")
    return [_input_item(entry, f"input[{index}]") for index, entry in enumerate(raw)]


def _input_item(raw: Any, param: str) -> dict[str, Any]:
    if isinstance(raw, dict) and raw.get("type") == "mcp_call":
        return _mcp_call_item(raw, param)
    if isinstance(raw, dict):
        raw = {key: value for key, value in raw.items() if key != "id"}
    item = parse_item(raw, param)
    data: dict[str, Any] = {"id": new_id(ITEM_ID_PREFIXES[item.type]), "type": item.type}
    if item.type == "message":
        data.update(role=item.role, content=item.content)
    elif item.type == "function_call":
        data.update(call_id=item.call_id, name=item.name, arguments=item.arguments)
    else:
        data.update(call_id=item.call_id, output=item.output)
    data["status"] = item.status
    return data


def _mcp_call_item(raw: dict[str, Any], param: str) -> dict[str, Any]:
    fields = {name: optional_str(raw, name, param=f"{param}.{name}") for name in ("name", "arguments", "server_label")}
    if not fields["name"]:
        raise invalid_request(f"'{param}.name' is required", param=f"{param}.name")
    output = optional_str(raw, "output", param=f"{param}.output")
    error = raw.get("error")
    return {"id": new_id("mcp"), "type": "mcp_call", "name": fields["name"], "arguments": fields["arguments"] or "{}",
            "server_label": fields["server_label"] or "jan", "output": output,
            "error": error if isinstance(error, str) else None, "status": "completed"}


def _parse_tools(raw: Any, public_url: str) -> tuple[list[FunctionTool], list[str], list[McpServer]]:
    functions: list[FunctionTool] = []
    mcp_names: list[str] = []
    servers: list[McpServer] = []
    if raw is None:
        return functions, mcp_names, servers
    if not isinstance(raw, list):
        raise type_error("tools", "an array of tools")
    if len(raw) > MAX_TOOLS:
        raise invalid_request(f"'tools' takes at most {MAX_TOOLS} tools", param="tools")
    for index, tool in enumerate(raw):
        param = f"tools[{index}]"
        if isinstance(tool, str) and tool:
            mcp_names.append(tool)
            continue
        if not isinstance(tool, dict):
            raise type_error(param, "a tool object or an MCP tool's name")
        kind = tool.get("type")
        if kind == "function":
            functions.append(_function_tool(tool, param))
        elif kind == "mcp":
            servers.append(_mcp_server(tool, param, public_url))
        else:
            raise invalid_request(
                f"'{param}.type' must be 'function' or 'mcp'; got {kind!r}", param=f"{param}.type",
                code="unsupported_value",
            )
    names = [tool.name for tool in functions]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise invalid_request(f"Tool '{name}' is given twice", param=f"tools[{index}].name")
    return functions, mcp_names, servers


def _function_tool(tool: dict[str, Any], param: str) -> FunctionTool:
    if isinstance(tool.get("function"), dict):  # chat completions' nested shape
        tool, param = tool["function"], f"{param}.function"
    name = optional_str(tool, "name", param=f"{param}.name", max_length=128)
    if not name:
        raise invalid_request(f"'{param}.name' is required", param=f"{param}.name")
    parameters = tool.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise type_error(f"{param}.parameters", "a JSON Schema object")
    return FunctionTool(
        name=name, description=optional_str(tool, "description", param=f"{param}.description"),
        parameters=parameters, strict=optional_bool(tool, "strict", param=f"{param}.strict"),
    )


def _mcp_server(tool: dict[str, Any], param: str, public_url: str) -> McpServer:
    label = optional_str(tool, "server_label", param=f"{param}.server_label")
    if not label:
        raise invalid_request(f"'{param}.server_label' is required", param=f"{param}.server_label")
    url = optional_str(tool, "server_url", param=f"{param}.server_url")
    if not url:
        raise invalid_request(f"'{param}.server_url' is required", param=f"{param}.server_url")
    if not is_own_mcp_url(url, public_url):
        raise invalid_request(
            f"'{param}.server_url' must be this server's MCP endpoint ({public_url}/v1/mcp): other MCP servers "
            "are not called", param=f"{param}.server_url", code="unsupported_value",
        )
    approval = tool.get("require_approval")
    if approval not in (None, "never") and approval != {"never": {}}:
        raise invalid_request(
            f"'{param}.require_approval' must be 'never': this server's tools run without approval requests",
            param=f"{param}.require_approval", code="unsupported_value",
        )
    allowed = tool.get("allowed_tools")
    if isinstance(allowed, dict):  # OpenAI's filter object
        allowed = allowed.get("tool_names")
    if allowed is not None and (not isinstance(allowed, list) or not all(isinstance(n, str) for n in allowed)):
        raise type_error(f"{param}.allowed_tools", "an array of tool names")
    return McpServer(server_label=label, allowed_tools=tuple(allowed) if allowed is not None else None)


def is_own_mcp_url(url: str, public_url: str) -> bool:
    """This server's `/v1/mcp` (or `/mcp`), by its public host or a loopback name on the same port."""
    given, own = urlsplit(url), urlsplit(public_url)
    if given.scheme not in ("http", "https") or given.path.rstrip("/") not in MCP_PATHS:
        return False
    same_host = given.hostname == own.hostname or given.hostname in LOOPBACK_HOSTS
    return same_host and given.port == own.port


def _parse_tool_choice(raw: Any) -> ToolChoice:
    if raw is None or raw in ("auto", "none", "required"):
        return ToolChoice(raw or "auto")
    if isinstance(raw, str) and raw:
        return ToolChoice("named", raw)  # the name of a tool
    if not isinstance(raw, dict):
        raise type_error("tool_choice", "'auto', 'none', 'required' or a tool")
    kind = raw.get("type")
    nested = raw.get("function")
    name = nested.get("name") if isinstance(nested, dict) else raw.get("name")
    if kind in ("function", "mcp") and isinstance(name, str) and name:
        return ToolChoice("named", name)
    if kind == "mcp" and name is None:
        return ToolChoice("required")
    raise invalid_request(
        "'tool_choice' must be 'auto', 'none', 'required', {type: 'function', name} or {type: 'mcp', server_label, "
        "name}", param="tool_choice",
    )


def _conversation_id(raw: Any) -> str | None:
    if isinstance(raw, dict):
        raw = raw.get("id")
        if not isinstance(raw, str):
            raise type_error("conversation.id", "a string")
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise type_error("conversation", "a conversation id or {id}")
    return raw


def _parse_text(raw: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """`text.format` → (the echoed `text`, chat completions' `response_format`)."""
    if raw is None:
        return {"format": {"type": "text"}}, None
    if not isinstance(raw, dict):
        raise type_error("text", "an object")
    fmt = raw.get("format")
    if fmt is None:
        return {"format": {"type": "text"}}, None
    if not isinstance(fmt, dict):
        raise type_error("text.format", "an object")
    kind = fmt.get("type")
    if kind == "text":
        return {"format": fmt}, None
    if kind == "json_object":
        return {"format": fmt}, {"type": "json_object"}
    if kind == "json_schema":
        name = optional_str(fmt, "name", param="text.format.name") or "response"
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise invalid_request("'text.format.schema' must be a JSON Schema object", param="text.format.schema")
        strict = optional_bool(fmt, "strict", param="text.format.strict")
        json_schema: dict[str, Any] = {"name": name, "schema": schema}
        if strict is not None:
            json_schema["strict"] = strict
        return {"format": fmt}, {"type": "json_schema", "json_schema": json_schema}
    raise invalid_request("'text.format.type' must be 'text', 'json_object' or 'json_schema'",
                          param="text.format.type")


def _optional_number(payload: dict[str, Any], name: str, low: float, high: float) -> float | None:
    if payload.get(name) is None:
        return None
    return optional_number(payload, name, low, high, default=0.0)
