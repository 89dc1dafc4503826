"""Grammars for llama.cpp's constrained decoding: JSON output (`response_format`) and tool calls.

With tools enabled, the model's turn is decoded under a grammar that allows either a final answer or calls of the
offered tools in the Hermes markup (`<tool_call>{"name": …, "arguments": {…}}</tool_call>`), arguments valid against
each tool's JSON schema. So even a 135M model's calls are always well-formed; only their values may be nonsense.
"""

from __future__ import annotations

import json
import re
from typing import Any

import llama_cpp
from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar, SchemaConverter, json_schema_to_gbnf

from server.core.errors import invalid_request
from server.llm.backends.base import NamedTool, SamplingParams
from server.llm.backends.tool_prompt import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

# Calls one turn may make when parallel calls are allowed: a small model would otherwise repeat calls until
# max_tokens.
MAX_PARALLEL_CALLS = 8

# A final answer next to tools: any text whose first character is neither "<" nor blank, so that the first
# generated character tells an answer (streamed as it comes) from a call (held back, then parsed).
_FREE_ANSWER = r"[^<\x00-\x20] [^\x00]*"


_LAX_STRING_CHAR = 'char ::= [^"\\\\] |'
_STRICT_STRING_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


# Largest repetition count a grammar may spell out. llama.cpp expands `x{0,n}` into n nested rules: at n=2000 its
# parser refuses the grammar, at n=100000 (file_search_index's maxLength) it overflows the stack and the process
# dies. Larger bounds are left out of the grammar; a tool still checks its real schema when called.
MAX_GRAMMAR_REPEAT = 256
_COUNT_KEYWORDS = ("minLength", "maxLength", "minItems", "maxItems")
_QUANTIFIER = re.compile(r"\{(\d*)\s*(?:,\s*(\d*))?\}")


def bounded_schema(schema: Any) -> Any:
    """`schema` without the counts and patterns whose repetitions llama.cpp's grammar cannot hold."""
    if isinstance(schema, list):
        return [bounded_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    bounded = {}
    for key, value in schema.items():
        if key in _COUNT_KEYWORDS and isinstance(value, int) and value > MAX_GRAMMAR_REPEAT:
            continue
        if key == "pattern" and isinstance(value, str) and _large_quantifier(value):
            continue
        bounded[key] = bounded_schema(value)
    return bounded


def _large_quantifier(pattern: str) -> bool:
    counts = (count for match in _QUANTIFIER.finditer(pattern) for count in match.groups() if count)
    return any(int(count) > MAX_GRAMMAR_REPEAT for count in counts)


def _literal(text: str) -> str:
    return json.dumps(text)  # a GBNF string literal escapes like a JSON string


def tool_gbnf(params: SamplingParams) -> str:
    """The grammar of one assistant turn with `params.tools` enabled."""
    converter = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    named = params.tool_choice.name if isinstance(params.tool_choice, NamedTool) else None
    alternatives = []
    for index, tool in enumerate(params.tools):
        if named is not None and tool.name != named:
            continue
        where = f"tools[{index}].function.parameters"
        arguments = _visit(converter, tool.parameters, f"tool{index}-arguments", where)
        head = _literal(f'{TOOL_CALL_OPEN}\n{{"name": "{tool.name}", "arguments": ')
        alternatives.append(f"{head} {arguments} {_literal('}' + chr(10) + TOOL_CALL_CLOSE)}")
    rules = [f"call ::= {' | '.join(alternatives)}"]
    # A named tool is called once, as OpenAI's models do when forced.
    if params.parallel_tool_calls and named is None:
        rules.append(f'calls ::= call ("\\n" call){{0,{MAX_PARALLEL_CALLS - 1}}}')
    else:
        rules.append("calls ::= call")
    if params.tool_choice == "auto":
        rules.append(f"answer ::= {_answer_rule(converter, params)}")
        rules.append("root ::= answer | calls")
    else:
        rules.append("root ::= calls")
    return _strict_strings(converter.format_grammar()) + "\n" + "\n".join(rules)


def _strict_strings(gbnf: str) -> str:
    """The converter's JSON strings admit raw control characters, which JSON forbids (so the call would not parse)
    and which let a small model ramble on across lines inside an argument instead of closing it."""
    return gbnf.replace(_LAX_STRING_CHAR, _STRICT_STRING_CHAR)


def _answer_rule(converter: SchemaConverter, params: SamplingParams) -> str:
    """A final answer keeps the response_format's constraint."""
    if params.json_schema is not None:
        return _visit(converter, params.json_schema, "answer-json", "response_format")
    if params.json_object:
        return _visit(converter, {"type": "object"}, "answer-json", "response_format")
    return _FREE_ANSWER


def _visit(converter: SchemaConverter, schema: dict[str, Any], name: str, param: str) -> str:
    try:
        return str(converter.visit(converter.resolve_refs(bounded_schema(schema), name), name))
    except Exception as error:  # the converter raises assorted types for schemas it cannot express
        raise invalid_request(f"Unsupported JSON schema: {error}", param=param) from error


class GrammarCache:
    """Grammars compiled once per JSON schema or tool set, and checked by llama.cpp's own parser first:
    sampling with a grammar llama.cpp failed to parse segfaults the process. Thread-safe; used from the worker
    threads, so compiling never blocks the event loop."""

    MAX_GRAMMARS = 128

    def __init__(self, vocab: llama_cpp.llama_vocab_p) -> None:
        self._vocab = vocab
        self._by_key: dict[str, LlamaGrammar] = {}
        self.json_object = self._compile(JSON_GBNF, "response_format")

    def for_params(self, params: SamplingParams) -> LlamaGrammar | None:
        if params.tools_enabled:
            # Key order matters (it fixes the order of generated properties): the key is the request as sent.
            key = json.dumps([
                [(t.name, t.parameters) for t in params.tools], repr(params.tool_choice), params.parallel_tool_calls,
                params.json_schema, params.json_object,
            ])
            return self._cached(key, lambda: tool_gbnf(params), "tools")
        if params.json_schema is None:
            return self.json_object if params.json_object else None
        key = json.dumps(params.json_schema)
        return self._cached(key, lambda: _schema_gbnf(key), "response_format")

    def for_gbnf(self, gbnf: str) -> LlamaGrammar:
        return self._cached(gbnf, lambda: gbnf, "tools")

    def _cached(self, key: str, gbnf: Any, param: str) -> LlamaGrammar:
        grammar = self._by_key.get(key)
        if grammar is None:
            grammar = self._compile(gbnf(), param)
            if len(self._by_key) >= self.MAX_GRAMMARS:
                self._by_key.clear()
            self._by_key[key] = grammar
        return grammar

    def _compile(self, gbnf: str, param: str) -> LlamaGrammar:
        sampler = llama_cpp.llama_sampler_init_grammar(self._vocab, gbnf.encode(), b"root")
        if not sampler:
            raise invalid_request("The JSON schema produced a grammar llama.cpp cannot parse", param=param)
        llama_cpp.llama_sampler_free(sampler)
        return LlamaGrammar.from_string(gbnf, verbose=False)


def _schema_gbnf(schema_json: str) -> str:
    try:
        return json_schema_to_gbnf(json.dumps(bounded_schema(json.loads(schema_json))))
    except Exception as error:  # the converter raises assorted types for schemas it cannot express
        raise invalid_request(f"Unsupported JSON schema: {error}", param="response_format") from error
