"""Size limits derived from the media settings, shared by the service, the gRPC server and the Envoy config."""

from __future__ import annotations

from server.core.config import Settings

MIB = 1024 * 1024


def upload_request_limit(settings: Settings) -> int:
    """Largest request body of an upload route: an image of media_max_bytes as base64 (4/3) in JSON or as
    multipart fits, with room to spare, so one just over the limit reaches the service and gets its 400. Never
    below the other routes' cap (resolve bodies are ordinary JSON payloads too)."""
    return max(2 * settings.media_max_bytes + MIB, settings.max_request_bytes)


def grpc_message_limit(settings: Settings) -> int:
    """Largest gRPC message the server takes or sends: the larger body cap, plus the envelope."""
    return max(settings.max_request_bytes, upload_request_limit(settings)) + MIB
