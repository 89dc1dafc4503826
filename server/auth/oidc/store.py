"""Started logins and the users an identity provider vouches for. Functions work inside the caller's transaction."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from server.auth.store import User
from server.core.db import Base, UtcDateTime, utcnow


class OidcLoginState(Base):
    """One started login (GET /auth/login), finished by the callback that presents its `state`.

    In the database rather than in memory so that any replica can finish the flow; deleted when it is used.
    """

    __tablename__ = "oidc_login_states"

    state: Mapped[str] = mapped_column(String(64), primary_key=True)
    code_verifier: Mapped[str] = mapped_column(String(128))
    nonce: Mapped[str] = mapped_column(String(64))
    redirect_url: Mapped[str] = mapped_column(String(2048))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


async def add_login_state(session: AsyncSession, login: OidcLoginState, now: datetime) -> None:
    """Stores a started login, and forgets the expired ones (logins people abandoned)."""
    await session.execute(delete(OidcLoginState).where(OidcLoginState.expires_at <= now))
    session.add(login)
    await session.flush()


async def take_login_state(session: AsyncSession, state: str) -> OidcLoginState | None:
    """Deletes and returns the login with this state: of two callbacks presenting it, exactly one gets it."""
    statement = (
        delete(OidcLoginState).where(OidcLoginState.state == state).returning(OidcLoginState)
        .execution_options(synchronize_session=False)
    )
    return (await session.scalars(statement)).one_or_none()


async def find_user_by_identity(session: AsyncSession, issuer: str, subject: str) -> User | None:
    return await session.scalar(select(User).where(User.issuer == issuer, User.subject == subject))

