"""Responses: OpenAI's Responses API, orchestrating chat completions and MCP tools (jan.responses.v1)."""
