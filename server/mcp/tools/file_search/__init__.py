"""Semantic file search: `file_search_index` and `file_search_query` over a per-user vector store (tools.py)."""
