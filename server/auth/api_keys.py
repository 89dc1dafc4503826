"""API keys: creating, listing and revoking a user's own keys, and recognising a presented key. No gRPC here.

A key is `<prefix>_` + 48 lowercase hex digits (24 random bytes), shown once, when it is created. Only
HMAC-SHA256(server secret, key) is stored: a copy of the database yields no usable key, and without the secret not
even a way to test guesses offline. The secret is `JAN_API_KEY_SECRET`, or one generated on first start into the
data dir (mode 0600). Changing it invalidates every key.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.auth import roles, store
from server.auth.store import ApiKey
from server.auth.tokens import create_file_once
from server.core.config import Settings
from server.core.db import utcnow
from server.core.errors import ApiError, invalid_request, unauthorized
from server.core.json_body import optional_int, optional_str
from server.core.pagination import Page, PageRequest, paginate

log = logging.getLogger(__name__)

KEY_RANDOM_BYTES = 24
SUFFIX_LENGTH = 4
MAX_NAME_LENGTH = 128
# Any prefix this server may have used, then 48 hex digits: other strings are rejected without a lookup.
KEY_PATTERN = re.compile(r"[A-Za-z0-9_]{1,24}_[0-9a-f]{48}")
# last_used_at is written at most this often per key.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# Verdicts kept at once, least recently used dropped first: enough for every key in use, bounded against floods.
MAX_CACHED_VERDICTS = 10_000
_NANOSECONDS_PER_MICROSECOND = 1000


def status_of(key: ApiKey, now: datetime) -> str:
    if key.revoked_at is not None:
        return "revoked"
    return "expired" if key.expires_at <= now else "active"


def invalid_api_key(message: str) -> ApiError:
    return ApiError(401, message, code="invalid_api_key")


@dataclass(frozen=True)
class NewApiKey:
    name: str
    # None: the default lifetime.
    lifetime: timedelta | None


def parse_new_api_key(payload: dict[str, Any], settings: Settings) -> NewApiKey:
    """`{name, expires_in_days?}`, or the original's `expires_in` (a Go duration: integer nanoseconds)."""
    name = optional_str(payload, "name", max_length=MAX_NAME_LENGTH)
    if name is None or not name.strip():
        raise invalid_request("'name' is required", param="name", code="missing_required_parameter")
    max_days = settings.api_key_max_ttl_days
    days = optional_int(payload, "expires_in_days", minimum=1, maximum=max_days)
    nanoseconds = optional_int(payload, "expires_in", minimum=1)
    if days is not None and nanoseconds is not None:
        raise invalid_request("Give 'expires_in_days' or 'expires_in', not both", param="expires_in")
    if days is not None:
        return NewApiKey(name=name, lifetime=timedelta(days=days))
    if nanoseconds is None:
        return NewApiKey(name=name, lifetime=None)
    lifetime = timedelta(microseconds=nanoseconds // _NANOSECONDS_PER_MICROSECOND)
    if not timedelta(seconds=1) <= lifetime <= timedelta(days=max_days):
        raise invalid_request(
            f"'expires_in' (nanoseconds) must be between 1 second and {max_days} days", param="expires_in"
        )
    return NewApiKey(name=name, lifetime=lifetime)


def load_or_create_secret(settings: Settings) -> bytes:
    """The HMAC key: the configured one, else the data dir's (created on first start). Blocking."""
    configured = settings.api_key_secret.get_secret_value()
    if configured:
        return configured.encode()
    path = settings.api_key_secret_path
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        create_file_once(path, secrets.token_hex(32).encode())
    secret = path.read_bytes().strip()
    if len(secret) < 32:
        raise RuntimeError(f"{path} holds fewer than 32 bytes: not an API key secret")
    return secret


class KeyHasher:
    """HMAC-SHA256 of keys with the server secret, which is read (or made) off the event loop on first use."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._secret: bytes | None = None

    async def digest(self, key: str) -> str:
        if self._secret is None:
            # Two first calls may both load: the file is created once, so they read the same secret.
            self._secret = await asyncio.to_thread(load_or_create_secret, self._settings)
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class CreatedApiKey:
    record: ApiKey
    # The only copy of the key: it is not stored.
    key: str


class ApiKeyService:
    """The caller's own keys. Another user's key is simply not found."""

    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._settings = settings
        self._sessions = sessions
        self._hasher = KeyHasher(settings)

    def parse_new(self, payload: dict[str, Any]) -> NewApiKey:
        return parse_new_api_key(payload, self._settings)

    async def create(self, user_id: str, new: NewApiKey) -> CreatedApiKey:
        settings = self._settings
        key = f"{settings.api_key_prefix}_{secrets.token_hex(KEY_RANDOM_BYTES)}"
        key_hash = await self._hasher.digest(key)
        now = utcnow()
        async with self._sessions.begin() as session:
            if not await store.lock_user(session, user_id):
                raise unauthorized("The user of this token no longer exists")
            if await store.count_active_api_keys(session, user_id, now) >= settings.api_key_max_per_user:
                raise invalid_request(
                    f"API key limit reached: a user may have {settings.api_key_max_per_user} active keys; "
                    "revoke one first",
                    code="api_key_limit_reached",
                )
            record = await store.add_api_key(
                session,
                user_id=user_id,
                name=new.name,
                prefix=settings.api_key_prefix,
                suffix=key[-SUFFIX_LENGTH:],
                key_hash=key_hash,
                tier=settings.api_key_default_tier,
                created_at=now,
                expires_at=now + (new.lifetime or timedelta(days=settings.api_key_default_ttl_days)),
            )
        return CreatedApiKey(record=record, key=key)

    async def list_page(self, user_id: str, page: PageRequest) -> Page[ApiKey]:
        async with self._sessions.begin() as session:
            statement = store.api_keys_of(user_id)
            return await paginate(session, statement, pk=ApiKey.pk, public_id=ApiKey.id, page=page)

    async def revoke(self, user_id: str, key_id: str) -> None:
        """Revokes the key (again is fine); the gateway stops accepting it within api_key_cache_seconds."""
        async with self._sessions.begin() as session:
            key = await store.find_api_key(session, user_id, key_id)
            if key is None:
                raise ApiError(404, f"API key not found: {key_id}", code="not_found", param="id")
            if key.revoked_at is None:
                key.revoked_at = utcnow()


@dataclass(frozen=True)
class ApiKeyIdentity:
    """Who a valid key speaks for, and what the rate limiter needs to know about it."""

    key_id: str
    user_id: str
    tier: str
    expires_at: datetime
    # The owner's roles when the verdict was made: a change applies within api_key_cache_seconds.
    roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Verdict:
    outcome: ApiKeyIdentity | ApiError
    fresh_until: float


class ApiKeyAuthenticator:
    """Recognises presented keys for the gateway's ext_authz check.

    A verdict, either way, is reused for `api_key_cache_seconds` (at most 5 s), so a revoked key stops working
    (and a change to its owner's roles applies) within that time while a busy key costs one database read per
    interval. Expiry is checked on every request.
    """

    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._settings = settings
        self._sessions = sessions
        self._hasher = KeyHasher(settings)
        self._verdicts: OrderedDict[str, _Verdict] = OrderedDict()

    async def authenticate(self, presented: str) -> ApiKeyIdentity:
        """The identity of a valid key; ApiError 401 `invalid_api_key` for anything else."""
        if not KEY_PATTERN.fullmatch(presented):
            raise invalid_api_key("Invalid API key")
        key_hash = await self._hasher.digest(presented)
        verdict = self._verdicts.get(key_hash)
        if verdict is None or verdict.fresh_until <= time.monotonic():
            verdict = await self._look_up(key_hash)
        else:
            self._verdicts.move_to_end(key_hash)
        if isinstance(verdict.outcome, ApiError):
            raise verdict.outcome
        if verdict.outcome.expires_at <= utcnow():
            raise invalid_api_key("API key has expired")
        return verdict.outcome

    async def _look_up(self, key_hash: str) -> _Verdict:
        now = utcnow()
        async with self._sessions.begin() as session:
            found = await store.find_api_key_by_hash(session, key_hash)
            key, owner_roles = found if found is not None else (None, [])
            outcome: ApiKeyIdentity | ApiError
            if key is None:
                outcome = invalid_api_key("Invalid API key")
            elif key.revoked_at is not None:
                outcome = invalid_api_key("API key has been revoked")
            elif key.expires_at <= now:
                outcome = invalid_api_key("API key has expired")
            else:
                since = now - LAST_USED_RESOLUTION
                if key.last_used_at is None or key.last_used_at < since:
                    await store.mark_api_key_used(session, key.id, now, unless_since=since)
                tier = self._known_tier(key.tier)
                outcome = ApiKeyIdentity(
                    key.id, key.user_id, tier, key.expires_at, roles=tuple(roles.normalized(owner_roles))
                )
        verdict = _Verdict(outcome, time.monotonic() + self._settings.api_key_cache_seconds)
        self._verdicts[key_hash] = verdict
        self._verdicts.move_to_end(key_hash)
        while len(self._verdicts) > MAX_CACHED_VERDICTS:
            self._verdicts.popitem(last=False)
        return verdict

    def _known_tier(self, tier: str) -> str:
        """Envoy has buckets only for configured tiers; a key of a tier removed from the settings gets the default."""
        if tier in self._settings.api_key_tiers:
            return tier
        log.warning("API key tier %r is not configured; applying %r", tier, self._settings.api_key_default_tier)
        return self._settings.api_key_default_tier
