"""Local storage's presigned URLs: `{base}/v1/media/{id}/content?expires=<unix>&signature=<hex HMAC>`.

The HMAC-SHA256 covers the HTTP method, the id and the expiry, so a URL for downloading cannot be used to upload,
nor for another id or for longer. The key is the configured secret, else one generated once into the data dir.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from urllib.parse import urlencode

from server.auth.tokens import create_file_once
from server.core.config import Settings
from server.core.errors import ApiError

SECRET_FILE = "media-signing-key"


def load_or_create_key(settings: Settings) -> bytes:
    """Blocking: reads (or creates) the key file."""
    configured = settings.media_signing_secret.get_secret_value()
    if configured:
        return configured.encode()
    path = settings.data_dir / SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        create_file_once(path, secrets.token_hex(32).encode())
    return path.read_bytes().strip()


class UrlSigner:
    def __init__(self, key: bytes, base_url: str) -> None:
        self._key = key
        self._base_url = base_url.rstrip("/")

    def url(self, method: str, media_id: str, expires_in: int) -> str:
        expires = int(time.time()) + expires_in
        query = urlencode({"expires": expires, "signature": self._signature(method, media_id, expires)})
        return f"{self._base_url}/v1/media/{media_id}/content?{query}"

    def check(self, method: str, media_id: str, expires: str, signature: str) -> None:
        """A 403 unless the signature is this server's for exactly this method, id and expiry, still valid."""
        if not expires.isdigit() or not signature:
            raise ApiError(403, "This URL is not signed: it needs 'expires' and 'signature'", code="invalid_signature")
        expected = self._signature(method, media_id, int(expires))
        if not hmac.compare_digest(expected, signature.lower()):
            raise ApiError(403, "The URL's signature is invalid", code="invalid_signature")
        if int(expires) < time.time():
            raise ApiError(403, "The URL has expired", code="url_expired")

    def _signature(self, method: str, media_id: str, expires: int) -> str:
        message = f"{method}\n{media_id}\n{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()
