"""Jan Server: OpenAI-compatible gRPC services behind Envoy."""
