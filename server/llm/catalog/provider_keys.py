"""Providers' API keys at rest: AES-256-GCM under a key derived from the server's provider-key secret.

The database never holds a key in the clear, and an admin sees only its hint (the last four characters). The
secret is `JAN_PROVIDER_KEY_SECRET`, or one generated once into the data directory; losing it makes the stored
keys unreadable (admins then set them again), which is what a stolen database dump should get.
"""

from __future__ import annotations

import base64
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from server.auth.tokens import create_file_once
from server.core.config import Settings

SECRET_FILE = "provider-key-secret"
NONCE_BYTES = 12
# Binds ciphertexts to their purpose: the same secret could not decrypt anything else, nor this elsewhere.
KDF_INFO = b"jan-server provider api keys v1"


def load_or_create_secret(settings: Settings) -> bytes:
    """Blocking: reads (or creates) the secret file."""
    configured = settings.provider_key_secret.get_secret_value()
    if configured:
        return configured.encode()
    path = settings.data_dir / SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        create_file_once(path, secrets.token_hex(32).encode())
    return path.read_bytes().strip()


def hint(api_key: str) -> str:
    return "..." + api_key[-4:]


class ProviderKeyCipher:
    def __init__(self, secret: bytes) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=KDF_INFO).derive(secret)
        self._aead = AESGCM(key)

    def encrypt(self, api_key: str, provider_id: str) -> str:
        """The provider's id is authenticated data: a ciphertext copied onto another provider does not decrypt."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, api_key.encode(), provider_id.encode())
        return base64.b64encode(nonce + sealed).decode()

    def decrypt(self, encrypted: str, provider_id: str) -> str | None:
        """None when the secret changed since the key was stored (the provider is then called without a key)."""
        raw = base64.b64decode(encrypted)
        try:
            return self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], provider_id.encode()).decode()
        except InvalidTag:
            return None
