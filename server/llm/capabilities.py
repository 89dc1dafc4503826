"""What a model can do, checked before a request reaches its backend: each refusal is a 400 naming the field."""

from __future__ import annotations

from dataclasses import replace

from server.core.errors import ApiError, invalid_request
from server.llm.catalog.router import Route
from server.llm.chat_request import ChatCompletionRequest


def model_not_multimodal(model: str, param: str) -> ApiError:
    return ApiError(400, f"The model '{model}' does not accept images: it has no vision support",
                    code="model_not_multimodal", param=param)


def checked_chat_request(request: ChatCompletionRequest, route: Route) -> ChatCompletionRequest:
    """The request if the model can serve it, with its token limit as the default `max_tokens`."""
    model, info = request.model, route.backend.info
    if route.embeddings:
        raise invalid_request(f"The model '{model}' is an embedding model; use it with /v1/embeddings",
                              param="model", code="model_not_chat")
    if request.first_image_param is not None and not info.vision:
        raise model_not_multimodal(model, request.first_image_param)
    if request.sampling.tools and not info.tools:
        raise invalid_request(f"The model '{model}' does not support tools", param="tools",
                              code="model_does_not_support_tools")
    limit = route.max_output_tokens
    if limit is None:
        return request
    if request.sampling.max_tokens is None:
        return replace(request, sampling=replace(request.sampling, max_tokens=limit))
    if request.sampling.max_tokens > limit:
        raise invalid_request(f"'max_tokens' is at most {limit} for the model '{model}'", param="max_tokens",
                              code="max_tokens_exceeded")
    return request
