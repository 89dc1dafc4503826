"""The gateway: Envoy, the only public listener, run as a child process in front of the gRPC services."""
