"""Health and readiness for load balancers and orchestrators, and the API docs (/openapi.json, /docs)."""
