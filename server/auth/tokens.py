"""The ES256 signing key, the JWKS that publishes it, and access-token minting.

The private key is generated on first start and kept as PEM at `settings.signing_key_path`; the JWKS is
rewritten to `settings.jwks_path` on every start because Envoy's jwt_authn verifies access tokens against
that file.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from server.core.config import Settings
from server.core.db import utcnow

ALGORITHM = "ES256"


@dataclass(frozen=True)
class _SigningKey:
    private_key: ec.EllipticCurvePrivateKey
    public_key: ec.EllipticCurvePublicKey
    jwk: dict[str, str]


class TokenIssuer:
    """Signs access tokens with one P-256 key. `await load_or_create()` before anything else."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._loaded: _SigningKey | None = None

    async def load_or_create(self) -> None:
        """Loads the key (made on first start) and writes the JWKS file, off the event loop."""
        self._loaded = await asyncio.to_thread(_load_or_create_key, self._settings)

    @property
    def _key(self) -> _SigningKey:
        if self._loaded is None:
            raise RuntimeError("TokenIssuer.load_or_create() has not run")
        return self._loaded

    @property
    def kid(self) -> str:
        return self._key.jwk["kid"]

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [dict(self._key.jwk)]}

    def mint_access_token(
        self, user_id: str, username: str, is_guest: bool, roles: Sequence[str] = ()
    ) -> str:
        now = utcnow()
        claims: dict[str, Any] = {
            "iss": self._settings.jwt_issuer,
            "aud": self._settings.jwt_audience,
            "sub": user_id,
            "iat": now,
            "nbf": now,
            "exp": now + timedelta(seconds=self._settings.access_token_ttl_seconds),
            "jti": secrets.token_urlsafe(16),
            "username": username,
            "guest": is_guest,
            # Envoy copies this to x-user-roles and checks it on /v1/admin/* (server/auth/roles.py).
            "roles": list(roles),
        }
        return jwt.encode(claims, self._key.private_key, algorithm=ALGORITHM, headers={"kid": self.kid})


def public_jwk(public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The RFC 7517 JWK of a P-256 public key; `kid` is its RFC 7638 thumbprint."""
    numbers = public_key.public_numbers()
    required = {
        "crv": "P-256",
        "kty": "EC",
        "x": _b64url(numbers.x.to_bytes(32, "big")),
        "y": _b64url(numbers.y.to_bytes(32, "big")),
    }
    # RFC 7638: the required members only, sorted, no whitespace.
    canonical = json.dumps(required, sort_keys=True, separators=(",", ":")).encode()
    kid = _b64url(hashlib.sha256(canonical).digest())
    return {**required, "kid": kid, "alg": ALGORITHM, "use": "sig"}


def _load_or_create_key(settings: Settings) -> _SigningKey:
    key_path = settings.signing_key_path
    key_path.parent.mkdir(parents=True, exist_ok=True)
    if not key_path.exists():
        create_file_once(key_path, _private_pem(ec.generate_private_key(ec.SECP256R1())))
    private_key = _load_p256_key(key_path)
    public_key = private_key.public_key()
    key = _SigningKey(private_key, public_key, public_jwk(public_key))
    _replace_atomically(settings.jwks_path, json.dumps({"keys": [key.jwk]}, indent=2).encode(), mode=0o644)
    return key


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_p256_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise RuntimeError(f"{path} is not a P-256 (ES256) private key")
    return key


def _write_temp(directory: Path, data: bytes) -> str:
    """Writes data to a fresh 0600 temp file next to its destination, so the final rename is atomic."""
    fd, temp_path = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    with os.fdopen(fd, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    return temp_path


def create_file_once(path: Path, data: bytes) -> None:
    """Creates path atomically unless it already exists: if two processes start at once, the first key wins
    and the other process loads it, rather than both serving with different keys."""
    temp_path = _write_temp(path.parent, data)
    try:
        os.link(temp_path, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(temp_path)


def _replace_atomically(path: Path, data: bytes, *, mode: int) -> None:
    """Readers (Envoy) never see a half-written file: they get the old one or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp_path = _write_temp(path.parent, data)
    try:
        os.chmod(temp_path, mode)
        os.replace(temp_path, path)
    except BaseException:
        os.unlink(temp_path)
        raise
