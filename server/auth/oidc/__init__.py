"""Login with an external OpenID Connect identity provider, and the provider's tokens used directly."""
