"""Web tools: `google_search` (SearXNG or Serper, cached in the database) and `scrape` (through the SSRF guard)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.core.config import Settings
from server.mcp.tools.base import Tool
from server.mcp.tools.web.scrape import ScrapeTool
from server.mcp.tools.web.search import GoogleSearchTool


def web_tools(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> list[Tool]:
    """The original's order: google_search, then scrape."""
    return [GoogleSearchTool(settings, sessions), ScrapeTool(settings)]
