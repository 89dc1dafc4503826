"""gRPC transport for jan.llm.v1.ProjectService: decode, call the domain, encode."""

from __future__ import annotations

from typing import Any

import grpc

from server.core.json_body import parse_object
from server.core.pagination import PageRequest, list_fields
from server.core.rpc import caller, send_http_status, unary
from server.gen.jan.llm.v1 import projects_pb2, projects_pb2_grpc
from server.llm.projects.service import ProjectService, parse_new_project, parse_project_changes
from server.llm.projects.store import Project


def project_message(project: Project) -> projects_pb2.Project:
    fields: dict[str, Any] = {
        "id": project.id,
        "object": "project",
        "name": project.name,
        "is_favorite": project.is_favorite,
        "is_archived": project.archived_at is not None,
        "created_at": int(project.created_at.timestamp()),
        "updated_at": int(project.updated_at.timestamp()),
    }
    # Optional fields are left unset, so they are absent from the JSON rather than empty.
    if project.instruction is not None:
        fields["instruction"] = project.instruction
    if project.archived_at is not None:
        fields["archived_at"] = int(project.archived_at.timestamp())
    return projects_pb2.Project(**fields)


class ProjectServicer(projects_pb2_grpc.ProjectServiceServicer):
    def __init__(self, projects: ProjectService) -> None:
        self._projects = projects

    @unary
    async def CreateProject(
        self, request: projects_pb2.CreateProjectRequest, context: grpc.aio.ServicerContext
    ) -> projects_pb2.Project:
        user_id = caller(context).user_id
        project = await self._projects.create(user_id, parse_new_project(parse_object(request.body.data)))
        await send_http_status(context, 201)
        return project_message(project)

    @unary
    async def ListProjects(
        self, request: projects_pb2.ListProjectsRequest, context: grpc.aio.ServicerContext
    ) -> projects_pb2.ListProjectsResponse:
        user_id = caller(context).user_id
        page_request = PageRequest.from_message(request)
        page = await self._projects.list_page(user_id, page_request)
        fields = list_fields(page)
        if page.has_more:
            fields["next_cursor"] = page.last_id
        return projects_pb2.ListProjectsResponse(data=[project_message(p) for p in page.rows], **fields)

    @unary
    async def GetProject(
        self, request: projects_pb2.GetProjectRequest, context: grpc.aio.ServicerContext
    ) -> projects_pb2.Project:
        return project_message(await self._projects.get(caller(context).user_id, request.project_id))

    @unary
    async def UpdateProject(
        self, request: projects_pb2.UpdateProjectRequest, context: grpc.aio.ServicerContext
    ) -> projects_pb2.Project:
        user_id = caller(context).user_id
        changes = parse_project_changes(parse_object(request.body.data))
        return project_message(await self._projects.update(user_id, request.project_id, changes))

    @unary
    async def DeleteProject(
        self, request: projects_pb2.DeleteProjectRequest, context: grpc.aio.ServicerContext
    ) -> projects_pb2.DeleteProjectResponse:
        await self._projects.delete(caller(context).user_id, request.project_id)
        return projects_pb2.DeleteProjectResponse(id=request.project_id, object="project.deleted", deleted=True)
