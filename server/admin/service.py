"""Users' roles, as admins manage them and as `jan-server admin create` bootstraps them. No gRPC here."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.auth import roles, store
from server.auth.store import User
from server.core.errors import ApiError, invalid_request

MAX_EMAIL_LENGTH = 150
# Stands for the caller in /v1/admin/users/{user_id}.
ME = "me"


@dataclass(frozen=True)
class AdminUser:
    """A user made or promoted by `jan-server admin create`, and whether it existed before."""

    user: User
    created: bool


def _user_not_found(user_id: str) -> ApiError:
    return ApiError(404, f"User not found: {user_id}", code="not_found", param="user_id")


def check_email(email: str) -> str:
    """A plausible email (it becomes the username); ValueError with a readable reason otherwise."""
    email = email.strip()
    local, at, domain = email.partition("@")
    if not at or not local or "." not in domain or len(email) > MAX_EMAIL_LENGTH or any(c.isspace() for c in email):
        raise ValueError(f"{email!r} is not an email address (at most {MAX_EMAIL_LENGTH} characters)")
    return email.lower()


class AdminService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def get_user(self, user_id: str) -> User:
        async with self._sessions.begin() as session:
            user = await store.get_user(session, user_id)
            if user is None:
                raise _user_not_found(user_id)
            return user

    async def grant_role(self, user_id: str, role: str) -> User:
        role = roles.parse_role(role)
        async with self._sessions.begin() as session:
            user = await self._locked_user(session, user_id)
            user.roles = roles.normalized([*user.roles, role])
            return user

    async def revoke_role(self, user_id: str, role: str, *, revoked_by: str) -> User:
        role = roles.parse_role(role)
        if role == roles.ADMIN and user_id == revoked_by:
            # Otherwise the last admin could leave the server with none (only the CLI could make another).
            raise invalid_request("You cannot revoke your own admin role; ask another admin", param="user_id")
        async with self._sessions.begin() as session:
            user = await self._locked_user(session, user_id)
            user.roles = [name for name in roles.normalized(user.roles) if name != role]
            return user

    async def ensure_admin(self, email: str, name: str | None) -> AdminUser:
        """The user whose username is the email, created if missing, with the admin role."""
        username = check_email(email)
        async with self._sessions.begin() as session:
            user = await store.find_user_by_username(session, username)
            created = user is None
            if user is None:
                user = await store.create_user(session, username=username, is_guest=False)
            if name:
                user.name = name
            user.roles = roles.normalized([*user.roles, roles.ADMIN])
            return AdminUser(user=user, created=created)

    async def _locked_user(self, session: AsyncSession, user_id: str) -> User:
        """The user, locked until the transaction ends, so two concurrent role changes cannot undo each other."""
        if not await store.lock_user(session, user_id):
            raise _user_not_found(user_id)
        user = await store.get_user(session, user_id)
        if user is None:
            raise _user_not_found(user_id)
        return user
