"""Public ids: `<prefix>_` + 16 characters of [0-9a-z], as the original Jan Server issues them."""

import secrets
import string

_ALPHABET = string.digits + string.ascii_lowercase


def new_id(prefix: str, length: int = 16) -> str:
    return f"{prefix}_" + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)
