"""Login with the identity provider (authorization code flow with PKCE), and its users as users of this server.

`start` stores a login (state, PKCE verifier, nonce, where to return) for `oidc_login_ttl_seconds` and answers the
provider's authorization URL; the provider sends the browser back to `finish` with a code and that state. The state
is deleted as it is read, so a replayed callback finds nothing (401). The ID token names the user by issuer and
subject; the user is created on first login and keeps their id (and data) ever after. The login ends with a redirect
to the stored URL carrying our own token pair in its fragment, which browsers never send to servers.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.auth import roles, store
from server.auth.oidc import store as oidc_store
from server.auth.oidc.provider import OidcProvider
from server.auth.service import AuthService, TokenPair
from server.core.config import Settings
from server.core.db import utcnow
from server.core.errors import ApiError, invalid_request, unauthorized

USERNAME_MAX_LENGTH = 100
_USERNAME_UNSAFE = re.compile(r"[^A-Za-z0-9._@-]+")


def login_disabled() -> ApiError:
    return ApiError(
        501, "Login with an identity provider is not configured on this server (JAN_OIDC_ISSUER)", code="oidc_disabled"
    )


def redirect_allowed(redirect_url: str, allowed: list[str]) -> bool:
    """Same scheme, host and port as an allowed URL, and its path, or a path under it if that ends with `/`."""
    target = urlsplit(redirect_url)
    for entry in allowed:
        base = urlsplit(entry)
        same_origin = (target.scheme, target.netloc.lower()) == (base.scheme, base.netloc.lower())
        base_path = base.path or "/"
        target_path = target.path or "/"
        under = base_path.endswith("/") and target_path.startswith(base_path)
        if same_origin and (target_path == base_path or under):
            return True
    return False


def claimed_roles(claims: Mapping[str, Any], dotted_path: str) -> list[str]:
    """The known roles listed at a dotted claim path (`realm_access.roles`); a list, or a space-separated string."""
    value: Any = claims
    for part in dotted_path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if not isinstance(value, list):
        return []
    return roles.normalized(item for item in value if isinstance(item, str))


@dataclass(frozen=True)
class StartedLogin:
    authorization_url: str
    state: str


class OidcLogin:
    def __init__(
        self, settings: Settings, sessions: async_sessionmaker[AsyncSession], provider: OidcProvider,
        auth: AuthService,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._provider = provider
        self._auth = auth

    @property
    def enabled(self) -> bool:
        return bool(self._settings.oidc_issuer)

    async def start(self, redirect_url: str) -> StartedLogin:
        if not self.enabled:
            raise login_disabled()
        allowed = self._settings.oidc_allowed_redirect_urls
        redirect_url = redirect_url or (allowed[0] if allowed else "")
        if not redirect_url:
            raise invalid_request("redirect_url is required", param="redirect_url", code="missing_required_parameter")
        if "#" in redirect_url or not redirect_allowed(redirect_url, allowed):
            raise invalid_request(
                "redirect_url is not one this server may send logins to (JAN_OIDC_ALLOWED_REDIRECT_URLS)",
                param="redirect_url", code="invalid_redirect_url",
            )
        state, nonce, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(64)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        # Asked first: a provider that cannot be reached leaves no login behind.
        url = await self._provider.authorization_url(state=state, nonce=nonce, code_challenge=challenge)
        now = utcnow()
        login = oidc_store.OidcLoginState(
            state=state, code_verifier=verifier, nonce=nonce, redirect_url=redirect_url, created_at=now,
            expires_at=now + timedelta(seconds=self._settings.oidc_login_ttl_seconds),
        )
        async with self._sessions.begin() as session:
            await oidc_store.add_login_state(session, login, now)
        return StartedLogin(authorization_url=url, state=state)

    async def finish(self, *, code: str, state: str, error: str = "", error_description: str = "") -> str:
        """Where to send the browser: the login's redirect URL with our tokens in the fragment."""
        if not self.enabled:
            raise login_disabled()
        if not state:
            raise invalid_request("state is required", param="state", code="missing_required_parameter")
        if not code and not error:
            raise invalid_request("code is required", param="code", code="missing_required_parameter")
        async with self._sessions.begin() as session:
            login = await oidc_store.take_login_state(session, state)
        if login is None or login.expires_at <= utcnow():
            raise unauthorized("Unknown or expired login state; start the login again")
        if error:
            raise unauthorized(f"The identity provider refused the login: {error_description or error}")
        answer = await self._provider.exchange_code(code, login.code_verifier)
        claims = await self._provider.verify_id_token(answer["id_token"], nonce=login.nonce)
        pair = await self.log_in(claims)
        fragment = urlencode({
            "access_token": pair.access_token,
            "refresh_token": pair.refresh_token,
            "expires_in": pair.expires_in,
            "token_type": "Bearer",
        })
        return f"{login.redirect_url}#{fragment}"

    async def log_in(self, claims: Mapping[str, Any]) -> TokenPair:
        """Our token pair for the user these verified claims name, created or updated from them."""
        user = await self.user_for(claims)
        async with self._sessions.begin() as session:
            return await self._auth.start_session(session, user)

    async def user_for(self, claims: Mapping[str, Any]) -> store.User:
        """The user with this issuer and subject, created on first sight; name, email and roles kept current."""
        try:
            return await self._upsert(claims)
        except IntegrityError:
            # Another request created the same user (or took the name) at the same moment: once more finds it.
            return await self._upsert(claims)

    async def _upsert(self, claims: Mapping[str, Any]) -> store.User:
        issuer, subject = str(claims["iss"]), str(claims["sub"])
        async with self._sessions.begin() as session:
            user = await oidc_store.find_user_by_identity(session, issuer, subject)
            if user is None:
                user = await store.create_user(session, username=await _free_username(session, claims), is_guest=False)
                user.issuer, user.subject = issuer, subject
            name = claims.get("name")
            if isinstance(name, str) and name:
                user.name = name[:150]
            email = claims.get("email")
            if isinstance(email, str) and email:
                holder = await store.find_user_by_email(session, email)
                # Accounts are never merged by email: another user keeping it leaves this one without.
                if holder is None:
                    user.email = email[:320]
            if self._settings.oidc_roles_claim:
                user.idp_roles = claimed_roles(claims, self._settings.oidc_roles_claim)
            await session.flush()
            return user


async def _free_username(session: AsyncSession, claims: Mapping[str, Any]) -> str:
    """The provider's preferred username (or the email's local part), made unique here if someone has it."""
    wanted = claims.get("preferred_username") or str(claims.get("email") or "").partition("@")[0] or "user"
    base = _USERNAME_UNSAFE.sub("-", str(wanted)).strip("-")[: USERNAME_MAX_LENGTH - 9] or "user"
    if await store.find_user_by_username(session, base) is None:
        return base
    return f"{base}-{secrets.token_hex(4)}"
