"""User roles: what exists, and how a set of them travels through the gateway.

Roles live on users (`users.roles`). Access tokens carry them as the `roles` claim, read from the database at
login and at every refresh; API keys inherit their owner's roles, looked up by ext_authz. Either way Envoy puts
them in the `x-user-roles` header (comma-separated), which its RBAC filter checks on the admin routes and the
services read through `server.core.rpc.caller`.
"""

from __future__ import annotations

from collections.abc import Iterable

from server.core.errors import invalid_request

ADMIN = "admin"
KNOWN_ROLES = frozenset({ADMIN})


def normalized(roles: Iterable[str]) -> list[str]:
    """Known roles only, sorted and without duplicates: the form stored and put in tokens."""
    return sorted(set(roles) & KNOWN_ROLES)


def parse_role(role: str, *, param: str = "role") -> str:
    """A role name from a request; 400 naming the field for anything unknown."""
    if role not in KNOWN_ROLES:
        raise invalid_request(
            f"Unknown role {role!r}; known roles: {', '.join(sorted(KNOWN_ROLES))}", param=param, code="invalid_value"
        )
    return role
