"""Health and readiness for load balancers and orchestrators."""
