"""Public ids: `<prefix>_` + 16 characters of [0-9a-z], as the original Jan Server issues them."""

import re
import secrets
import string

_ALPHABET = string.digits + string.ascii_lowercase


def new_id(prefix: str, length: int = 16) -> str:
    return f"{prefix}_" + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


# `data:<mime>;jan_<id>` (no `base64,`): how chat messages refer to uploaded media, which the media service resolves.
MEDIA_PLACEHOLDER = re.compile(r"data:(image/[a-z0-9.+-]+);(jan_[A-Za-z0-9]+)")
