"""The model catalog as admins change it: providers, their models, and aliases. No gRPC here.

Every change is written in one transaction and then reread into the router, so the next request on this replica
routes by it (other replicas within `catalog_refresh_seconds`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.core.config import Settings
from server.core.db import utcnow
from server.core.errors import ApiError, invalid_request
from server.core.ids import new_id
from server.core.json_body import optional_bool, optional_int, optional_str, parse_metadata, parse_object
from server.llm.catalog import store
from server.llm.catalog.provider_keys import ProviderKeyCipher, hint
from server.llm.catalog.router import ModelRouter
from server.llm.catalog.store import SETTINGS_PROVIDER_ID, ModelAlias, Provider, ProviderModel
from server.llm.catalog.sync import fetch_model_names, public_model_ids
from server.llm.chat_request import validate_default_params

MAX_NAME_LENGTH = 150
MAX_API_KEY_LENGTH = 512
MAX_EXCEPT_MODELS = 1000
_VENDOR = re.compile(r"^[a-z0-9_-]{1,40}$")
_ALIAS = re.compile(r"^[A-Za-z0-9._:/-]{1,255}$")
# What an admin may change on a model; on a JAN_MODELS model only the first three (its capabilities come from the
# settings).
SETTINGS_MODEL_FIELDS = frozenset({"active", "display_name", "default_params"})
MODEL_FIELDS = SETTINGS_MODEL_FIELDS | {"supports_images", "supports_tools", "supports_embeddings", "token_limits"}


@dataclass(frozen=True)
class ProviderView:
    provider: Provider
    models: list[ProviderModel]
    model_count: int
    model_active_count: int


def _not_found(what: str, name: str, param: str) -> ApiError:
    return ApiError(404, f"{what} not found: {name}", code="not_found", param=param)


def _name_taken(name: str) -> ApiError:
    return ApiError(409, f"A provider named '{name}' already exists", code="conflict", param="name")


def _base_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise invalid_request("'base_url' must be an http:// or https:// URL, e.g. http://10.0.0.5:8000/v1",
                              param="base_url")
    return value.rstrip("/")


class CatalogAdmin:
    def __init__(
        self, settings: Settings, sessions: async_sessionmaker[AsyncSession], router: ModelRouter,
        cipher: ProviderKeyCipher,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._router = router
        self._cipher = cipher

    async def list_providers(self) -> list[ProviderView]:
        async with self._sessions() as session:
            models = await store.list_models(session)
            return [_view(provider, models, with_models=False) for provider in await store.list_providers(session)]

    async def get_provider(self, provider_id: str) -> ProviderView:
        async with self._sessions() as session:
            provider = await self._provider(session, provider_id)
            return _view(provider, await store.list_models(session, provider_id))

    async def create_provider(self, body: bytes) -> ProviderView:
        payload = parse_object(body)
        name = self._name(payload)
        if name is None:
            raise invalid_request("'name' is required", param="name", code="missing_required_parameter")
        vendor = optional_str(payload, "vendor")
        if vendor is None or not _VENDOR.match(vendor.lower()):
            raise invalid_request("'vendor' is required: 1-40 characters of a-z, 0-9, _ and -, e.g. vllm",
                                  param="vendor")
        vendor = vendor.lower()
        base_url = optional_str(payload, "base_url")
        if base_url is None:
            raise invalid_request("'base_url' is required", param="base_url", code="missing_required_parameter")
        base_url = _base_url(base_url)
        api_key = optional_str(payload, "api_key", max_length=MAX_API_KEY_LENGTH) or ""
        metadata = parse_metadata(payload.get("metadata"))
        active = optional_bool(payload, "active")
        # Listing the models first: a provider that cannot be reached is refused before anything is stored.
        names = await self._fetch(base_url, api_key) if optional_bool(payload, "sync") is not False else None
        try:
            provider = await self._insert_provider(name, vendor, base_url, api_key, metadata, active, names)
        except IntegrityError:
            # Another admin registered the same name in the meantime.
            raise _name_taken(name) from None
        await self._router.refresh()
        return await self.get_provider(provider.id)

    async def _insert_provider(
        self, name: str, vendor: str, base_url: str, api_key: str, metadata: dict[str, str], active: bool | None,
        names: list[str] | None,
    ) -> Provider:
        async with self._sessions.begin() as session:
            if await store.find_provider_by_name(session, name) is not None:
                raise _name_taken(name)
            provider = Provider(id=new_id("prov"), name=name, vendor=vendor, base_url=base_url, metadata_=metadata,
                                active=True if active is None else active)
            self._set_key(provider, api_key)
            session.add(provider)
            if names is not None:
                _sync_models(session, provider, [], names, enable_new=True)
        return provider

    async def update_provider(self, provider_id: str, body: bytes) -> ProviderView:
        payload = parse_object(body)
        async with self._sessions.begin() as session:
            provider = await self._provider(session, provider_id)
            name = self._name(payload)
            if name is not None and name != provider.name:
                if await store.find_provider_by_name(session, name) is not None:
                    raise _name_taken(name)
                provider.name = name
            base_url = optional_str(payload, "base_url")
            if base_url is not None:
                provider.base_url = _base_url(base_url)
            if "api_key" in payload:
                self._set_key(provider, optional_str(payload, "api_key", max_length=MAX_API_KEY_LENGTH) or "")
            if "metadata" in payload:
                provider.metadata_ = parse_metadata(payload.get("metadata"))
            active = optional_bool(payload, "active")
            if active is not None:
                provider.active = active
        await self._router.refresh()
        return await self.get_provider(provider_id)

    async def delete_provider(self, provider_id: str) -> None:
        async with self._sessions.begin() as session:
            await store.delete_provider(session, await self._provider(session, provider_id))
        await self._router.refresh()

    async def sync_provider(self, provider_id: str) -> ProviderView:
        async with self._sessions() as session:
            provider = await self._provider(session, provider_id)
            base_url, api_key = provider.base_url, self._key(provider)
        names = await self._fetch(base_url, api_key)
        async with self._sessions.begin() as session:
            provider = await self._provider(session, provider_id)
            enable_new = provider.metadata_.get("auto_enable_new_models", "").lower() == "true"
            _sync_models(session, provider, await store.list_models(session, provider_id), names, enable_new)
        await self._router.refresh()
        return await self.get_provider(provider_id)

    async def list_models(
        self, *, provider_id: str, active: bool | None, model_key: str, supports_images: bool | None,
        limit: int, offset: int,
    ) -> tuple[list[tuple[ProviderModel, str]], int]:
        """A page of (model, its vendor), and how many models match."""
        async with self._sessions() as session:
            rows = await store.list_models(session, provider_id or None)
            vendors = {p.id: p.vendor for p in await store.list_providers(session)}
        settings_vendors = self._settings_vendors()
        matching = [
            row for row in sorted(rows, key=lambda r: (r.provider_id != SETTINGS_PROVIDER_ID, r.pk))
            if (active is None or row.active == active)
            and (supports_images is None or row.vision == supports_images)
            and model_key.lower() in row.model_id.lower()
        ]
        page = [
            (row, settings_vendors[row.upstream_model] if row.provider_id == SETTINGS_PROVIDER_ID
             else vendors.get(row.provider_id, ""))
            for row in matching[offset:offset + limit]
        ]
        return page, len(matching)

    async def get_model(self, provider_model_id: str) -> tuple[ProviderModel, str]:
        async with self._sessions() as session:
            row = await self._model(session, provider_model_id)
            return row, await self._vendor(session, row)

    async def update_model(self, provider_model_id: str, body: bytes) -> tuple[ProviderModel, str]:
        payload = parse_object(body)
        async with self._sessions.begin() as session:
            row = await self._model(session, provider_model_id)
            if row.provider_id == SETTINGS_PROVIDER_ID:
                fixed = sorted((set(payload) & MODEL_FIELDS) - SETTINGS_MODEL_FIELDS)
                if fixed:
                    raise invalid_request(
                        f"'{fixed[0]}' of a JAN_MODELS model comes from the settings; change it in JAN_MODELS",
                        param=fixed[0], code="read_only_field",
                    )
            _update_model(row, payload)
            vendor = await self._vendor(session, row)
        await self._router.refresh()
        return row, vendor

    async def bulk_toggle(self, body: bytes) -> tuple[int, int]:
        """(models changed, models skipped because `except_models` named them)."""
        payload = parse_object(body)
        enable = optional_bool(payload, "enable")
        if enable is None:
            raise invalid_request("'enable' is required", param="enable", code="missing_required_parameter")
        provider_id = optional_str(payload, "provider_id")
        excepted = payload.get("except_models") or []
        if not isinstance(excepted, list) or not all(isinstance(m, str) for m in excepted):
            raise invalid_request("'except_models' must be an array of model ids", param="except_models")
        if len(excepted) > MAX_EXCEPT_MODELS:
            raise invalid_request(f"'except_models' takes at most {MAX_EXCEPT_MODELS} ids", param="except_models")
        skip = set(excepted)
        updated = skipped = 0
        async with self._sessions.begin() as session:
            if provider_id:
                await self._provider(session, provider_id)
            for row in await store.list_models(session, provider_id or None):
                if row.id in skip or row.model_id in skip:
                    skipped += 1
                elif row.active != enable and (row.listed or not enable):
                    row.active = enable
                    updated += 1
        await self._router.refresh()
        return updated, skipped

    async def list_aliases(self) -> list[ModelAlias]:
        async with self._sessions() as session:
            return await store.list_aliases(session)

    async def set_alias(self, alias: str, body: bytes) -> ModelAlias:
        if not _ALIAS.match(alias):
            raise invalid_request("An alias is 1-255 characters of letters, digits and . _ : / -", param="alias")
        target = optional_str(parse_object(body), "model")
        if not target:
            raise invalid_request("'model' is required", param="model", code="missing_required_parameter")
        async with self._sessions.begin() as session:
            served = {row.model_id for row in await store.list_models(session)}
            if alias in served:
                raise ApiError(409, f"'{alias}' is already a model id; an alias cannot hide a model",
                               code="conflict", param="alias")
            if target not in served:
                raise invalid_request(f"The model '{target}' does not exist (an alias names a model id, not an "
                                      "alias)", param="model", code="model_not_found")
            row = await store.get_alias(session, alias)
            if row is None:
                row = ModelAlias(alias=alias, model_id=target)
                session.add(row)
            row.model_id = target
        await self._router.refresh()
        return row

    async def delete_alias(self, alias: str) -> None:
        async with self._sessions.begin() as session:
            row = await store.get_alias(session, alias)
            if row is None:
                raise _not_found("Alias", alias, "alias")
            await session.delete(row)
        await self._router.refresh()

    def _name(self, payload: dict[str, Any]) -> str | None:
        name = optional_str(payload, "name", max_length=MAX_NAME_LENGTH)
        if name is not None and not name.strip():
            raise invalid_request("'name' must not be empty", param="name")
        return name.strip() if name is not None else None

    def _set_key(self, provider: Provider, api_key: str) -> None:
        provider.api_key_encrypted = self._cipher.encrypt(api_key, provider.id) if api_key else None
        provider.api_key_hint = hint(api_key) if api_key else None

    def _key(self, provider: Provider) -> str:
        if not provider.api_key_encrypted:
            return ""
        return self._cipher.decrypt(provider.api_key_encrypted, provider.id) or ""

    async def _fetch(self, base_url: str, api_key: str) -> list[str]:
        return await fetch_model_names(base_url, api_key, self._settings.provider_sync_timeout_seconds)

    async def _provider(self, session: AsyncSession, provider_id: str) -> Provider:
        provider = await store.get_provider(session, provider_id)
        if provider is None:
            raise _not_found("Provider", provider_id, "provider_id")
        return provider

    async def _model(self, session: AsyncSession, provider_model_id: str) -> ProviderModel:
        row = await store.get_model(session, provider_model_id)
        if row is None:
            raise _not_found("Provider model", provider_model_id, "provider_model_id")
        return row

    async def _vendor(self, session: AsyncSession, row: ProviderModel) -> str:
        if row.provider_id == SETTINGS_PROVIDER_ID:
            return self._settings_vendors()[row.upstream_model]
        provider = await store.get_provider(session, row.provider_id)
        return provider.vendor if provider is not None else ""

    def _settings_vendors(self) -> dict[str, str]:
        """Models of JAN_MODELS are listed with their backend as the vendor (rows exist only for those)."""
        return {model.id: model.backend for model in self._settings.models}


def _view(provider: Provider, models: list[ProviderModel], *, with_models: bool = True) -> ProviderView:
    own = [model for model in models if model.provider_id == provider.id]
    return ProviderView(provider, own if with_models else [], len(own), sum(model.active for model in own))


def _sync_models(
    session: AsyncSession, provider: Provider, existing: list[ProviderModel], names: list[str], enable_new: bool
) -> None:
    """Adds the provider's new models, marks those it stopped listing (and disables them), keeps admins' edits."""
    by_name = {row.upstream_model: row for row in existing}
    public_ids = public_model_ids(provider.vendor, names)
    for name in names:
        row = by_name.get(name)
        if row is None:
            session.add(ProviderModel(
                id=new_id("pmdl"), provider_id=provider.id, model_id=public_ids[name], upstream_model=name,
                display_name=name, active=enable_new, listed=True, vision=False, tools=True, embeddings=False,
                default_params={},
            ))
        else:
            row.listed = True
    for row in existing:
        if row.upstream_model not in public_ids:
            row.listed = False
            row.active = False
    provider.last_synced_at = utcnow()


def _update_model(row: ProviderModel, payload: dict[str, Any]) -> None:
    active = optional_bool(payload, "active")
    if active is not None:
        if active and not row.listed:
            raise invalid_request("The provider no longer lists this model; sync the provider first",
                                  param="active", code="model_not_listed")
        row.active = active
    display_name = optional_str(payload, "display_name", max_length=255)
    if display_name:
        row.display_name = display_name
    for field_name, column in (("supports_images", "vision"), ("supports_tools", "tools"),
                               ("supports_embeddings", "embeddings")):
        value = optional_bool(payload, field_name)
        if value is not None:
            setattr(row, column, value)
    limits = payload.get("token_limits")
    if limits is not None:
        if not isinstance(limits, dict):
            raise invalid_request("'token_limits' must be an object", param="token_limits")
        if "context_length" in limits:
            row.context_length = optional_int(limits, "context_length", minimum=128,
                                              param="token_limits.context_length")
        if "max_completion_tokens" in limits:
            row.max_output_tokens = optional_int(limits, "max_completion_tokens", minimum=1,
                                                 param="token_limits.max_completion_tokens")
    if "default_params" in payload:
        row.default_params = validate_default_params(payload["default_params"])
