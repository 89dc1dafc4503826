"""The model catalog's tables: providers, their models (and the models of JAN_MODELS), and aliases.

A provider is an OpenAI-compatible server registered by an admin; its API key is stored encrypted
(server/llm/catalog/provider_keys.py). `provider_models` holds one row per model a provider serves, and one per
model of `JAN_MODELS` under the provider id `settings` (seeded at startup, so admins can enable, disable and tune
them with the same endpoints). `model_aliases` maps extra names to model ids.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Index, Integer, String, UniqueConstraint, delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, RowKey, UtcDateTime, utcnow

# The provider id of the models configured in JAN_MODELS.
SETTINGS_PROVIDER_ID = "settings"


class Provider(Base):
    __tablename__ = "providers"

    pk: Mapped[int] = mapped_column(RowKey, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(150), unique=True)
    vendor: Mapped[str] = mapped_column(String(40))
    base_url: Mapped[str] = mapped_column(String(2048))
    # AES-GCM ciphertext of the API key (nonce + ciphertext, base64); None without a key.
    api_key_encrypted: Mapped[str | None] = mapped_column(String(1024))
    api_key_hint: Mapped[str | None] = mapped_column(String(16))
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSON, default=dict)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    last_synced_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class ProviderModel(Base):
    __tablename__ = "provider_models"
    __table_args__ = (
        UniqueConstraint("provider_id", "upstream_model"),
        Index("ix_provider_models_model_id", "model_id"),
    )

    pk: Mapped[int] = mapped_column(RowKey, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    # A provider's id, or SETTINGS_PROVIDER_ID.
    provider_id: Mapped[str] = mapped_column(String(40))
    # The public id clients pass as `model`.
    model_id: Mapped[str] = mapped_column(String(255))
    # The model's name at the provider (for settings models, their id).
    upstream_model: Mapped[str] = mapped_column(String(255))
    display_name: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # False once a sync no longer finds it at the provider (it is then also inactive).
    listed: Mapped[bool] = mapped_column(Boolean, default=True)
    vision: Mapped[bool] = mapped_column(Boolean, default=False)
    tools: Mapped[bool] = mapped_column(Boolean, default=True)
    embeddings: Mapped[bool] = mapped_column(Boolean, default=False)
    context_length: Mapped[int | None] = mapped_column(Integer)
    max_output_tokens: Mapped[int | None] = mapped_column(Integer)
    # Sampling parameters applied when a request leaves them out.
    default_params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class ModelAlias(Base):
    __tablename__ = "model_aliases"

    alias: Mapped[str] = mapped_column(String(255), primary_key=True)
    model_id: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


async def list_providers(session: AsyncSession) -> list[Provider]:
    return list(await session.scalars(select(Provider).order_by(Provider.pk)))


async def get_provider(session: AsyncSession, provider_id: str) -> Provider | None:
    return await session.scalar(select(Provider).where(Provider.id == provider_id))


async def find_provider_by_name(session: AsyncSession, name: str) -> Provider | None:
    return await session.scalar(select(Provider).where(Provider.name == name))


async def list_models(session: AsyncSession, provider_id: str | None = None) -> list[ProviderModel]:
    statement = select(ProviderModel).order_by(ProviderModel.pk)
    if provider_id is not None:
        statement = statement.where(ProviderModel.provider_id == provider_id)
    return list(await session.scalars(statement))


async def get_model(session: AsyncSession, provider_model_id: str) -> ProviderModel | None:
    return await session.scalar(select(ProviderModel).where(ProviderModel.id == provider_model_id))


async def delete_provider(session: AsyncSession, provider: Provider) -> None:
    """The provider, its models, and the aliases that named only its models."""
    model_ids = {model.model_id for model in await list_models(session, provider.id)}
    await session.execute(delete(ProviderModel).where(ProviderModel.provider_id == provider.id))
    served = select(ProviderModel.model_id).where(ProviderModel.model_id.in_(model_ids))
    still_served = set(await session.scalars(served))
    orphaned = model_ids - still_served
    if orphaned:
        await session.execute(delete(ModelAlias).where(ModelAlias.model_id.in_(orphaned)))
    await session.delete(provider)


async def list_aliases(session: AsyncSession) -> list[ModelAlias]:
    return list(await session.scalars(select(ModelAlias).order_by(ModelAlias.alias)))


async def get_alias(session: AsyncSession, alias: str) -> ModelAlias | None:
    return await session.get(ModelAlias, alias)
