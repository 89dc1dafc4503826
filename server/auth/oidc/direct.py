"""The identity provider's own access tokens used directly on the API (`Authorization: Bearer <IdP token>`).

Envoy's jwt_authn verifies such a token against the provider's JWKS (signature, issuer, `aud` =
`oidc_audience`, expiry) and hands its payload to ext_authz, which asks here whose it is: the user with the token's
issuer and subject, created on first use like at login. Answers are kept for `api_key_cache_seconds` per token
identity, so a busy client costs one database write per interval, and a change of roles at the provider applies
with the next token.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server.auth import roles
from server.auth.oidc.login import OidcLogin, claimed_roles
from server.core.config import Settings
from server.core.errors import unauthorized

MAX_CACHED_IDENTITIES = 10_000


@dataclass(frozen=True)
class OidcIdentity:
    user_id: str
    roles: tuple[str, ...]
    fresh_until: float


class OidcTokenUsers:
    def __init__(self, settings: Settings, login: OidcLogin) -> None:
        self._settings = settings
        self._login = login
        self._identities: OrderedDict[tuple[str, ...], OidcIdentity] = OrderedDict()

    async def identity(self, payload: Mapping[str, Any]) -> OidcIdentity:
        """Our user for a verified token payload; 401 if it names no subject."""
        issuer, subject = payload.get("iss"), payload.get("sub")
        if not isinstance(issuer, str) or not isinstance(subject, str) or not subject:
            raise unauthorized("The identity provider's token names no subject")
        granted = claimed_roles(payload, self._settings.oidc_roles_claim) if self._settings.oidc_roles_claim else []
        cache_key = (issuer, subject, *granted)
        known = self._identities.get(cache_key)
        if known is not None and known.fresh_until > time.monotonic():
            self._identities.move_to_end(cache_key)
            return known
        user = await self._login.user_for(payload)
        identity = OidcIdentity(
            user.id, tuple(roles.normalized(user.all_roles)), time.monotonic() + self._settings.api_key_cache_seconds
        )
        self._identities[cache_key] = identity
        while len(self._identities) > MAX_CACHED_IDENTITIES:
            self._identities.popitem(last=False)
        return identity
