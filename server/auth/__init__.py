"""Auth: guest users, token issuing and refresh, the JWKS Envoy verifies against, API keys and their gateway check."""
