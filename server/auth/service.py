"""Auth domain: guest users, token pairs, refresh-token rotation with reuse detection. No gRPC here.

Refresh tokens are opaque (`rt_` + 256 random bits), stored only as SHA-256, and single-use: each refresh
spends the presented token and issues the next one in the same family. Presenting a spent token means it was
copied (or a client raced itself), so the whole family is revoked and that login must start over.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.auth import roles, store
from server.auth.api_keys import ApiKeyService
from server.auth.tokens import TokenIssuer
from server.core.config import Settings
from server.core.db import utcnow
from server.core.errors import ApiError, invalid_request, unauthorized
from server.core.ids import new_id
from server.core.json_body import optional_str

REFRESH_TOKEN_PREFIX = "rt_"
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_USERNAME = re.compile(r"[A-Za-z0-9._@-]{3,100}")


@dataclass(frozen=True)
class TokenPair:
    user_id: str
    username: str
    access_token: str
    refresh_token: str
    expires_in: int


@dataclass(frozen=True)
class Profile:
    """The authenticated caller, as GetMe reports it."""

    id: str
    username: str
    is_guest: bool
    created_at: datetime
    auth_method: str
    roles: list[str]
    name: str | None = None
    email: str | None = None
    # The identity provider that vouches for the user; None for guests and users created here.
    issuer: str | None = None


@dataclass(frozen=True)
class Upgrade:
    """What a guest becomes (POST /auth/upgrade)."""

    email: str
    username: str
    full_name: str | None


def parse_upgrade(payload: dict[str, Any]) -> Upgrade:
    """`{email, username, full_name?}`, each checked, with a 400 naming the field."""
    email = (optional_str(payload, "email", max_length=320) or "").strip()
    if not _EMAIL.fullmatch(email):
        raise invalid_request("'email' must be an email address", param="email")
    username = (optional_str(payload, "username", max_length=100) or "").strip()
    if not _USERNAME.fullmatch(username) or username.startswith("guest-"):
        raise invalid_request(
            "'username' must be 3-100 letters, digits, '.', '_', '@' or '-', and not start with 'guest-'",
            param="username",
        )
    full_name = (optional_str(payload, "full_name", max_length=150) or "").strip()
    return Upgrade(email=email, username=username, full_name=full_name or None)


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AuthService:
    def __init__(
        self, settings: Settings, sessions: async_sessionmaker[AsyncSession], tokens: TokenIssuer
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._tokens = tokens
        self.api_keys = ApiKeyService(settings, sessions)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return self._tokens.jwks()

    async def guest_login(self) -> TokenPair:
        async with self._sessions.begin() as session:
            user = await store.create_user(session, username=f"guest-{secrets.token_hex(16)}", is_guest=True)
            return await self.start_session(session, user)

    async def start_session(self, session: AsyncSession, user: store.User) -> TokenPair:
        """The first token pair of a new login of this user: a new refresh-token family."""
        refresh_token = await self._issue_refresh_token(session, user.id, family_id=new_id("rtfam"), now=utcnow())
        return self._pair(user, refresh_token)

    async def refresh(self, refresh_token: str) -> TokenPair:
        token_hash = hash_refresh_token(refresh_token)
        now = utcnow()
        async with self._sessions.begin() as session:
            # Spend first, look second: the conditional UPDATE is what decides a race, not an earlier read.
            spent = await store.spend_refresh_token(session, token_hash, now)
            if spent is not None:
                next_token = await self._issue_refresh_token(session, spent.user_id, spent.family_id, now=now)
                return self._pair(spent.user, next_token)
            rejection = await self._rejection(session, token_hash, now)
        # Raised after the block so a reuse-triggered family revocation is committed, not rolled back.
        raise rejection

    async def me(self, user_id: str, auth_method: str) -> Profile:
        async with self._sessions.begin() as session:
            user = await store.get_user(session, user_id)
            if user is None:
                raise unauthorized("The user of this token no longer exists")
            return Profile(
                id=user.id,
                username=user.username,
                is_guest=user.is_guest,
                created_at=user.created_at,
                auth_method=auth_method,
                roles=roles.normalized(user.all_roles),
                name=user.name,
                email=user.email,
                issuer=user.issuer,
            )

    async def upgrade(self, user_id: str, upgrade: Upgrade) -> Profile:
        """Makes a guest a registered user, keeping their id and so everything they own; 409 if a name is taken."""
        async with self._sessions.begin() as session:
            user = await store.get_user(session, user_id)
            if user is None:
                raise unauthorized("The user of this token no longer exists")
            if not user.is_guest:
                raise ApiError(409, "This account is already registered", code="already_registered")
            if await store.find_user_by_username(session, upgrade.username) is not None:
                raise ApiError(
                    409, f"The username {upgrade.username!r} is taken", code="username_taken", param="username"
                )
            if await store.find_user_by_email(session, upgrade.email) is not None:
                raise ApiError(409, f"The email {upgrade.email!r} is taken", code="email_taken", param="email")
            user.username, user.email, user.name = upgrade.username, upgrade.email, upgrade.full_name
            user.is_guest = False
            try:
                await session.flush()
            except IntegrityError as error:
                raise ApiError(409, "The username or email was just taken", code="already_taken") from error
        return await self.me(user_id, "jwt")

    async def revoke(self, refresh_token: str, *, user_id: str | None = None) -> bool:
        """Revokes the login (refresh-token family) this refresh token belongs to; False if it is unknown (or, given
        `user_id`, someone else's). Its access tokens stay valid until they expire, within minutes."""
        async with self._sessions.begin() as session:
            token = await store.find_refresh_token(session, hash_refresh_token(refresh_token))
            if token is None or (user_id is not None and token.user_id != user_id):
                return False
            await store.revoke_family(session, token.family_id, utcnow())
            return True

    async def log_out_everywhere(self, user_id: str) -> None:
        async with self._sessions.begin() as session:
            await store.revoke_user_tokens(session, user_id, utcnow())

    async def _rejection(self, session: AsyncSession, token_hash: str, now: datetime) -> ApiError:
        """Why a refresh token could not be spent; revokes its family if it was already spent."""
        token = await store.find_refresh_token(session, token_hash)
        if token is None:
            return unauthorized("Invalid refresh token")
        if token.used_at is not None:
            await store.revoke_family(session, token.family_id, now)
            return unauthorized(
                "Refresh token was already used; every token from this login has been revoked, log in again"
            )
        if token.revoked_at is not None:
            return unauthorized("Refresh token has been revoked, log in again")
        return unauthorized("Refresh token has expired, log in again")

    async def _issue_refresh_token(
        self, session: AsyncSession, user_id: str, family_id: str, *, now: datetime
    ) -> str:
        token = REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)
        await store.add_refresh_token(
            session,
            token_hash=hash_refresh_token(token),
            family_id=family_id,
            user_id=user_id,
            expires_at=now + timedelta(seconds=self._settings.refresh_token_ttl_seconds),
        )
        return token

    def _pair(self, user: store.User, refresh_token: str) -> TokenPair:
        return TokenPair(
            user_id=user.id,
            username=user.username,
            access_token=self._tokens.mint_access_token(
                user.id, user.username, user.is_guest, roles.normalized(user.all_roles)
            ),
            refresh_token=refresh_token,
            expires_in=self._settings.access_token_ttl_seconds,
        )
