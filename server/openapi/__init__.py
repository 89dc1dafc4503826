"""The OpenAPI document of the REST API, generated from the proto descriptors at build time."""
