"""The identity provider as this server talks to it: discovery, its signing keys, the token endpoint, ID tokens.

Any standards-compliant OpenID Connect provider works; it is found by its issuer URL. Its metadata
(`/.well-known/openid-configuration`) is read once and kept; its keys (JWKS) are kept for
`oidc_jwks_cache_seconds` and read again early when a token names a key id they do not have (a key rotation).
Every failure to talk to the provider is a 502, never a 500: the problem is upstream.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt

from server.core.config import Settings
from server.core.errors import ApiError, unauthorized

WELL_KNOWN_PATH = "/.well-known/openid-configuration"
# Signature algorithms accepted for ID tokens: the asymmetric ones (`none` and HMAC never).
ID_TOKEN_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]


def provider_error(message: str) -> ApiError:
    return ApiError(502, message, code="identity_provider_error")


def discovery_url(settings: Settings) -> str:
    return settings.oidc_discovery_url or settings.oidc_issuer.rstrip("/") + WELL_KNOWN_PATH


@dataclass(frozen=True)
class Discovery:
    """The parts of the provider's metadata this server uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


class OidcProvider:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._http = httpx.AsyncClient(timeout=settings.oidc_timeout_seconds, trust_env=False)
        self._discovery: Discovery | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._keys_fresh_until = 0.0
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        await self._http.aclose()

    async def discovery(self) -> Discovery:
        if self._discovery is None:
            document = await self._get_json(discovery_url(self._settings), "metadata")
            try:
                found = Discovery(
                    issuer=str(document["issuer"]),
                    authorization_endpoint=str(document["authorization_endpoint"]),
                    token_endpoint=str(document["token_endpoint"]),
                    jwks_uri=str(document["jwks_uri"]),
                )
            except KeyError as missing:
                raise provider_error(f"The identity provider's metadata lacks {missing}") from None
            if found.issuer.rstrip("/") != self._settings.oidc_issuer.rstrip("/"):
                raise provider_error(
                    f"The identity provider calls itself {found.issuer!r}, not the configured issuer"
                )
            self._discovery = found
        return self._discovery

    async def authorization_url(self, *, state: str, nonce: str, code_challenge: str) -> str:
        endpoint = (await self.discovery()).authorization_endpoint
        query = urlencode({
            "response_type": "code",
            "client_id": self._settings.oidc_client_id,
            "redirect_uri": self._settings.oidc_callback_url,
            "scope": self._settings.oidc_scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
        })
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"

    async def exchange_code(self, code: str, code_verifier: str) -> dict[str, Any]:
        """The token endpoint's answer for an authorization code: at least an `id_token`."""
        settings = self._settings
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": settings.oidc_callback_url,
            "code_verifier": code_verifier,
            "client_id": settings.oidc_client_id,
        }
        secret = settings.oidc_client_secret.get_secret_value()
        # client_secret_basic, the method every provider supports; a public client sends its id only.
        auth = httpx.BasicAuth(settings.oidc_client_id, secret) if secret else httpx.USE_CLIENT_DEFAULT
        endpoint = (await self.discovery()).token_endpoint
        try:
            response = await self._http.post(endpoint, data=form, auth=auth, headers={"Accept": "application/json"})
        except httpx.HTTPError as error:
            raise provider_error(f"The identity provider's token endpoint is unreachable: {error}") from error
        answer = _json_object(response)
        if response.status_code != 200 or answer is None:
            reason = (answer or {}).get("error_description") or (answer or {}).get("error") or response.reason_phrase
            raise provider_error(
                f"The identity provider refused the authorization code ({response.status_code}: {reason})"
            )
        if not isinstance(answer.get("id_token"), str):
            raise provider_error("The identity provider's token response has no id_token")
        return answer

    async def verify_id_token(self, id_token: str, *, nonce: str) -> dict[str, Any]:
        """The claims of an ID token meant for this client: signature, `iss`, `aud`, `exp` and `nonce` checked.

        A token that fails a check is the provider's (or an attacker's) fault, not the user's: 502 if the provider
        misbehaves in a way a client cannot cause (no key), 401 for a token that is simply not valid.
        """
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError as error:
            raise unauthorized(f"The identity provider's ID token is malformed: {error}") from error
        key = await self._key(str(header.get("kid", "")))
        try:
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key,
                algorithms=[name for name in ID_TOKEN_ALGORITHMS if name == key.algorithm_name],
                audience=self._settings.oidc_client_id,
                issuer=(await self.discovery()).issuer,
                leeway=self._settings.jwt_clock_skew_seconds,
                options={"require": ["iss", "sub", "aud", "exp", "iat"]},
            )
        except jwt.PyJWTError as error:
            raise unauthorized(f"The identity provider's ID token is not valid: {error}") from error
        if claims.get("nonce") != nonce:
            raise unauthorized("The identity provider's ID token is not valid: its nonce is not this login's")
        return claims

    async def _key(self, kid: str) -> jwt.PyJWK:
        """The provider's signing key with this id; the JWKS is read again once if the id is unknown."""
        if kid not in self._keys or time.monotonic() >= self._keys_fresh_until:
            async with self._lock:
                if kid not in self._keys or time.monotonic() >= self._keys_fresh_until:
                    await self._load_keys()
        if kid in self._keys:
            return self._keys[kid]
        if not kid and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        raise unauthorized(f"The ID token's signing key {kid!r} is not one of the identity provider's")

    async def _load_keys(self) -> None:
        jwks_uri = self._settings.oidc_jwks_uri or (await self.discovery()).jwks_uri
        document = await self._get_json(jwks_uri, "keys")
        try:
            key_set = jwt.PyJWKSet.from_dict(document)
        except jwt.PyJWTError as error:
            raise provider_error(f"The identity provider's JWKS is not usable: {error}") from error
        self._keys = {str(key.key_id or ""): key for key in key_set.keys if key.public_key_use in (None, "sig")}
        self._keys_fresh_until = time.monotonic() + self._settings.oidc_jwks_cache_seconds

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            response = await self._http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as error:
            raise provider_error(f"The identity provider's {what} ({url}) are unreachable: {error}") from error
        document = _json_object(response)
        if response.status_code != 200 or document is None:
            raise provider_error(f"The identity provider's {what} ({url}) answered {response.status_code}")
        return document


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        value = response.json()
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
