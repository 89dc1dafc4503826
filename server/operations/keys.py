"""`jan-server keys create|list|revoke`: API keys of any user, from the server's host (the database directly).

The same rules as `/v1/auth/api-keys` (per-user limit, lifetimes, the HMAC'd hash); a user is named by id
(`user_...`) or username (e.g. an admin's email).
"""

from __future__ import annotations

import sys
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.auth import store
from server.auth.api_keys import ApiKeyService, NewApiKey
from server.core.config import Settings
from server.core.db import create_engine, session_factory, utcnow
from server.core.errors import ApiError
from server.core.pagination import PageRequest

MAX_LISTED = 100


async def _user_id(sessions: async_sessionmaker[AsyncSession], user: str) -> str | None:
    async with sessions() as session:
        found = await store.get_user(session, user) or await store.find_user_by_username(session, user.lower())
        return found.id if found is not None else None


async def keys_command(
    settings: Settings, action: str, user: str, *, name: str = "", expires_in_days: int | None = None, key_id: str = ""
) -> int:
    """`action`: create (a key named `name`), list, or revoke (`key_id`). The exit status."""
    engine = create_engine(settings.database)
    try:
        sessions = session_factory(engine)
        user_id = await _user_id(sessions, user)
        if user_id is None:
            print(f"jan-server keys: no user '{user}' (give a user id or a username)", file=sys.stderr)
            return 2
        keys = ApiKeyService(settings, sessions)
        try:
            if action == "create":
                lifetime = timedelta(days=expires_in_days) if expires_in_days is not None else None
                created = await keys.create(user_id, NewApiKey(name=name, lifetime=lifetime))
                print(f"API key {created.record.id} for {user_id} (expires "
                      f"{created.record.expires_at.date().isoformat()}); it is shown only now, keep it secret:")
                print(created.key)
            elif action == "list":
                page = await keys.list_page(user_id, PageRequest(limit=MAX_LISTED, order="desc"))
                now = utcnow()
                for key in page.rows:
                    status = "revoked" if key.revoked_at else "expired" if key.expires_at <= now else "active"
                    used = key.last_used_at.isoformat(timespec="seconds") if key.last_used_at else "never"
                    print(f"{key.id}  {status:8}  expires {key.expires_at.date().isoformat()}  last used {used}  "
                          f"{key.name}")
            else:
                await keys.revoke(user_id, key_id)
                print(f"Revoked {key_id}; the gateway refuses it within {settings.api_key_cache_seconds} s.")
        except ApiError as error:
            print(f"jan-server keys {action}: {error.message}", file=sys.stderr)
            return 1
    finally:
        await engine.dispose()
    return 0
