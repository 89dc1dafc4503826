"""LLM API: models and chat completions."""
