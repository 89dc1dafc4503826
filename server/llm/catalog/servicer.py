"""gRPC transport for jan.admin.v1.ModelCatalogService: check the admin role, call the catalog, encode."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from server.auth import roles
from server.core.rpc import body_reply, caller, http_body_unary, json_reply, unary
from server.gen.jan.admin.v1 import model_catalog_pb2 as pb
from server.gen.jan.admin.v1 import model_catalog_pb2_grpc
from server.llm.catalog.service import CatalogAdmin, ProviderView
from server.llm.catalog.store import ModelAlias, ProviderModel

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def _seconds(value: Any) -> int:
    return int(value.timestamp())


def provider_message(view: ProviderView, vendor_of_models: str) -> pb.Provider:
    message = pb.Provider(
        id=view.provider.id, object="provider", name=view.provider.name, vendor=view.provider.vendor,
        base_url=view.provider.base_url, active=view.provider.active, metadata=view.provider.metadata_,
        model_count=view.model_count, model_active_count=view.model_active_count,
        models=[model_message(row, vendor_of_models) for row in view.models],
        created_at=_seconds(view.provider.created_at), updated_at=_seconds(view.provider.updated_at),
    )
    if view.provider.api_key_hint:
        message.api_key_hint = view.provider.api_key_hint
    if view.provider.last_synced_at:
        message.last_synced_at = _seconds(view.provider.last_synced_at)
    return message


def model_message(row: ProviderModel, vendor: str) -> pb.ProviderModel:
    defaults = struct_pb2.Struct()
    defaults.update(row.default_params)
    limits = pb.TokenLimits()
    if row.context_length is not None:
        limits.context_length = row.context_length
    if row.max_output_tokens is not None:
        limits.max_completion_tokens = row.max_output_tokens
    return pb.ProviderModel(
        id=row.id, object="provider_model", provider_id=row.provider_id, provider_vendor=vendor,
        model_public_id=row.model_id, provider_original_model_id=row.upstream_model, display_name=row.display_name,
        supports_images=row.vision, supports_tools=row.tools, supports_embeddings=row.embeddings,
        token_limits=limits, default_params=defaults, active=row.active,
        created_at=_seconds(row.created_at), updated_at=_seconds(row.updated_at),
    )


def alias_message(row: ModelAlias) -> pb.ModelAlias:
    return pb.ModelAlias(alias=row.alias, object="model.alias", model=row.model_id, created_at=_seconds(row.created_at))


def _require_admin(context: grpc.aio.ServicerContext) -> None:
    """Envoy's RBAC filter checked already; this is the service's own check (for callers inside the mesh)."""
    caller(context).require_role(roles.ADMIN)


class ModelCatalogServicer(model_catalog_pb2_grpc.ModelCatalogServiceServicer):
    def __init__(self, catalog: CatalogAdmin) -> None:
        self._catalog = catalog

    @http_body_unary(body_reply(pb.ListProvidersResponse))
    async def ListProviders(
        self, request: pb.ListProvidersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListProvidersResponse:
        _require_admin(context)
        providers = await self._catalog.list_providers()
        # A bare array (the original's shape) of the Provider messages, printed as Envoy prints them.
        listed = [
            json_format.MessageToDict(provider_message(view, view.provider.vendor), preserving_proto_field_name=True,
                                      always_print_fields_with_no_presence=True)
            for view in providers
        ]
        return json_reply(pb.ListProvidersResponse, listed)

    @unary
    async def CreateProvider(self, request: pb.CreateProviderRequest, context: grpc.aio.ServicerContext) -> pb.Provider:
        _require_admin(context)
        view = await self._catalog.create_provider(request.body.data)
        return provider_message(view, view.provider.vendor)

    @unary
    async def GetProvider(self, request: pb.GetProviderRequest, context: grpc.aio.ServicerContext) -> pb.Provider:
        _require_admin(context)
        view = await self._catalog.get_provider(request.provider_id)
        return provider_message(view, view.provider.vendor)

    @unary
    async def UpdateProvider(self, request: pb.UpdateProviderRequest, context: grpc.aio.ServicerContext) -> pb.Provider:
        _require_admin(context)
        view = await self._catalog.update_provider(request.provider_id, request.body.data)
        return provider_message(view, view.provider.vendor)

    @unary
    async def DeleteProvider(
        self, request: pb.DeleteProviderRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteProviderResponse:
        _require_admin(context)
        await self._catalog.delete_provider(request.provider_id)
        return pb.DeleteProviderResponse(id=request.provider_id, object="provider.deleted", deleted=True)

    @unary
    async def SyncProviderModels(
        self, request: pb.SyncProviderModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.Provider:
        _require_admin(context)
        view = await self._catalog.sync_provider(request.provider_id)
        return provider_message(view, view.provider.vendor)

    @unary
    async def ListProviderModels(
        self, request: pb.ListProviderModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListProviderModelsResponse:
        _require_admin(context)
        limit = min(max(request.limit, 1), MAX_LIMIT) if request.HasField("limit") else DEFAULT_LIMIT
        offset = request.offset if request.HasField("offset") else 0
        page, total = await self._catalog.list_models(
            provider_id=request.provider_id,
            active=request.active if request.HasField("active") else None,
            model_key=request.model_key,
            supports_images=request.supports_images if request.HasField("supports_images") else None,
            limit=limit, offset=offset,
        )
        return pb.ListProviderModelsResponse(
            object="list", data=[model_message(row, vendor) for row, vendor in page],
            total=total, limit=limit, has_more=offset + len(page) < total,
        )

    @unary
    async def GetProviderModel(
        self, request: pb.GetProviderModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.ProviderModel:
        _require_admin(context)
        return model_message(*await self._catalog.get_model(request.provider_model_id))

    @unary
    async def UpdateProviderModel(
        self, request: pb.UpdateProviderModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.ProviderModel:
        _require_admin(context)
        return model_message(*await self._catalog.update_model(request.provider_model_id, request.body.data))

    @unary
    async def BulkToggleProviderModels(
        self, request: pb.BulkToggleProviderModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.BulkToggleProviderModelsResponse:
        _require_admin(context)
        updated, skipped = await self._catalog.bulk_toggle(request.body.data)
        return pb.BulkToggleProviderModelsResponse(updated_count=updated, skipped_count=skipped)

    @unary
    async def ListModelAliases(
        self, request: pb.ListModelAliasesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelAliasesResponse:
        _require_admin(context)
        aliases = await self._catalog.list_aliases()
        return pb.ListModelAliasesResponse(object="list", data=[alias_message(row) for row in aliases])

    @unary
    async def SetModelAlias(self, request: pb.SetModelAliasRequest, context: grpc.aio.ServicerContext) -> pb.ModelAlias:
        _require_admin(context)
        return alias_message(await self._catalog.set_alias(request.alias, request.body.data))

    @unary
    async def DeleteModelAlias(
        self, request: pb.DeleteModelAliasRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteModelAliasResponse:
        _require_admin(context)
        await self._catalog.delete_alias(request.alias)
        return pb.DeleteModelAliasResponse(alias=request.alias, object="model.alias.deleted", deleted=True)
