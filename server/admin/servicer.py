"""gRPC transport for jan.admin.v1.AdminService: decode, check the role, call the domain, encode."""

from __future__ import annotations

import grpc

from server.admin.service import ME, AdminService
from server.auth import roles
from server.auth.store import User
from server.core.errors import invalid_request
from server.core.json_body import optional_str, parse_object
from server.core.rpc import Caller, caller, unary
from server.gen.jan.admin.v1 import admin_pb2, admin_pb2_grpc


def user_message(user: User) -> admin_pb2.User:
    message = admin_pb2.User(
        id=user.id,
        object="user",
        username=user.username,
        is_guest=user.is_guest,
        roles=roles.normalized(user.roles),
        created_at=int(user.created_at.timestamp()),
    )
    if user.name is not None:
        message.name = user.name
    return message


def _admin(context: grpc.aio.ServicerContext) -> Caller:
    """The caller, who must be an admin (Envoy checked already; this is the service's own check)."""
    identity = caller(context)
    identity.require_role(roles.ADMIN)
    return identity


def _user_id(identity: Caller, user_id: str) -> str:
    return identity.user_id if user_id == ME else user_id


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, admin: AdminService) -> None:
        self._admin = admin

    @unary
    async def GetUser(self, request: admin_pb2.GetUserRequest, context: grpc.aio.ServicerContext) -> admin_pb2.User:
        identity = _admin(context)
        return user_message(await self._admin.get_user(_user_id(identity, request.user_id)))

    @unary
    async def GrantRole(
        self, request: admin_pb2.GrantRoleRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.User:
        identity = _admin(context)
        role = optional_str(parse_object(request.body.data), "role")
        if role is None:
            raise invalid_request("'role' is required", param="role", code="missing_required_parameter")
        return user_message(await self._admin.grant_role(_user_id(identity, request.user_id), role))

    @unary
    async def RevokeRole(
        self, request: admin_pb2.RevokeRoleRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.User:
        identity = _admin(context)
        user = await self._admin.revoke_role(
            _user_id(identity, request.user_id), request.role, revoked_by=identity.user_id
        )
        return user_message(user)
