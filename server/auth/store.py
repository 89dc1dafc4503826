"""Auth tables and the queries on them. Every function works inside the caller's session and transaction."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    CursorResult,
    ForeignKey,
    Index,
    Select,
    String,
    UniqueConstraint,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.core.db import Base, RowKey, UtcDateTime, utcnow
from server.core.ids import new_id


class User(Base):
    __tablename__ = "users"
    # A user who logged in with an identity provider is found again by the provider's issuer and subject.
    __table_args__ = (UniqueConstraint("issuer", "subject"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("user"))
    username: Mapped[str] = mapped_column(String(150), unique=True)
    is_guest: Mapped[bool] = mapped_column(Boolean)
    # Role names, e.g. ["admin"] (server/auth/roles.py); carried in access tokens and API-key checks.
    roles: Mapped[list[str]] = mapped_column(JSON, default=list, server_default=text("'[]'"))
    # Roles the identity provider granted at the user's last login or token use (JAN_OIDC_ROLES_CLAIM); kept apart
    # from `roles` so the provider can also take them away again.
    idp_roles: Mapped[list[str]] = mapped_column(JSON, default=list, server_default=text("'[]'"))
    name: Mapped[str | None] = mapped_column(String(150))
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    # The identity provider's `iss` and `sub`; NULL for guests and users created here.
    issuer: Mapped[str | None] = mapped_column(String(512))
    subject: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

    @property
    def all_roles(self) -> list[str]:
        """Granted here or by the identity provider."""
        return [*self.roles, *self.idp_roles]


class RefreshToken(Base):
    """One opaque refresh token. Only its SHA-256 is stored, so a database leak yields no usable tokens.

    Tokens rotated from the same login share a `family_id`, which is what reuse detection revokes.
    """

    __tablename__ = "refresh_tokens"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("rtok"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    family_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    # Joined so a refresh gets the user's claims in the same query (async sessions can't lazy-load).
    user: Mapped[User] = relationship(lazy="joined")


class ApiKey(Base):
    """A long-lived key for scripts. Only an HMAC-SHA256 of the key (with the server's secret) is stored."""

    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_user_id_pk", "user_id", "pk"),)

    pk: Mapped[int] = mapped_column(RowKey, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, default=lambda: new_id("key"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(32))
    suffix: Mapped[str] = mapped_column(String(8))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Rate-limit tier (free, pro, enterprise); Envoy's limits are chosen by it.
    tier: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


async def create_user(session: AsyncSession, *, username: str, is_guest: bool) -> User:
    user = User(username=username, is_guest=is_guest)
    session.add(user)
    await session.flush()
    return user


async def get_user(session: AsyncSession, user_id: str) -> User | None:
    return await session.get(User, user_id)


async def find_user_by_username(session: AsyncSession, username: str) -> User | None:
    return await session.scalar(select(User).where(User.username == username))


async def find_user_by_email(session: AsyncSession, email: str) -> User | None:
    return await session.scalar(select(User).where(User.email == email))


async def add_refresh_token(
    session: AsyncSession, *, token_hash: str, family_id: str, user_id: str, expires_at: datetime
) -> RefreshToken:
    token = RefreshToken(token_hash=token_hash, family_id=family_id, user_id=user_id, expires_at=expires_at)
    session.add(token)
    await session.flush()
    return token


async def find_refresh_token(session: AsyncSession, token_hash: str) -> RefreshToken | None:
    return await session.scalar(select(RefreshToken).where(RefreshToken.token_hash == token_hash))


async def spend_refresh_token(session: AsyncSession, token_hash: str, now: datetime) -> RefreshToken | None:
    """Marks a live token used and returns it (user loaded); None if it is unknown, spent, revoked or expired.

    One conditional UPDATE decides: of two concurrent spenders exactly one sees rowcount 1.
    """
    statement = (
        update(RefreshToken)
        .where(
            RefreshToken.token_hash == token_hash,
            RefreshToken.used_at.is_(None),
            RefreshToken.revoked_at.is_(None),
            RefreshToken.expires_at > now,
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    result: CursorResult[tuple[()]] = await session.execute(statement)  # type: ignore[assignment]
    if result.rowcount != 1:
        return None
    return (await session.scalars(select(RefreshToken).where(RefreshToken.token_hash == token_hash))).one()


async def revoke_user_tokens(session: AsyncSession, user_id: str, now: datetime) -> None:
    """Logs the user out everywhere: every refresh token of every login."""
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )


async def revoke_family(session: AsyncSession, family_id: str, now: datetime) -> None:
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )


async def lock_user(session: AsyncSession, user_id: str) -> bool:
    """Serializes the caller's transaction with others on the same user until it ends; False if no such user.

    A no-op UPDATE takes the row lock on PostgreSQL and the write lock on SQLite (which ignores FOR UPDATE),
    so a count-then-insert cannot race a concurrent one.
    """
    statement = (
        update(User).where(User.id == user_id).values(updated_at=User.updated_at)
        .execution_options(synchronize_session=False)
    )
    result: CursorResult[tuple[()]] = await session.execute(statement)  # type: ignore[assignment]
    return result.rowcount == 1


async def count_active_api_keys(session: AsyncSession, user_id: str, now: datetime) -> int:
    statement = select(func.count()).select_from(ApiKey).where(
        ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None), ApiKey.expires_at > now
    )
    return await session.scalar(statement) or 0


async def add_api_key(
    session: AsyncSession, *, user_id: str, name: str, prefix: str, suffix: str, key_hash: str, tier: str,
    created_at: datetime, expires_at: datetime,
) -> ApiKey:
    key = ApiKey(
        user_id=user_id, name=name, prefix=prefix, suffix=suffix, key_hash=key_hash, tier=tier,
        created_at=created_at, expires_at=expires_at,
    )
    session.add(key)
    await session.flush()
    return key


def api_keys_of(user_id: str) -> Select[ApiKey]:
    """Every key of one user, for paging (server/core/pagination.py)."""
    return select(ApiKey).where(ApiKey.user_id == user_id)


async def find_api_key(session: AsyncSession, user_id: str, key_id: str) -> ApiKey | None:
    return await session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == user_id))


async def find_api_key_by_hash(session: AsyncSession, key_hash: str) -> tuple[ApiKey, list[str]] | None:
    """The key and its owner's current roles, which the key inherits."""
    statement = (
        select(ApiKey, User.roles, User.idp_roles).join(User, User.id == ApiKey.user_id)
        .where(ApiKey.key_hash == key_hash)
    )
    row = (await session.execute(statement)).one_or_none()
    return None if row is None else (row[0], [*(row[1] or []), *(row[2] or [])])


async def mark_api_key_used(session: AsyncSession, key_id: str, now: datetime, *, unless_since: datetime) -> None:
    """Sets last_used_at, unless it is already at or after `unless_since` (another process just did)."""
    await session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < unless_since))
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
