"""Media ids: `jan_` + a ULID (48-bit millisecond time, 80 random bits) in lowercase Crockford base32, as the
original Jan Server issues them. Time-ordered, so ids sort roughly by creation."""

from __future__ import annotations

import re
import secrets
import time

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
MEDIA_ID = re.compile(r"^jan_[0-9a-hjkmnp-tv-z]{26}$")


def new_ulid(now_ms: int | None = None) -> str:
    """26 characters: 10 for the time, 16 for the randomness."""
    timestamp = int(time.time() * 1000) if now_ms is None else now_ms
    value = (timestamp & (2**48 - 1)) << 80 | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def new_media_id() -> str:
    return f"jan_{new_ulid()}"
