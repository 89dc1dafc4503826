"""A test OpenID Connect provider on loopback, built on Authlib's authorization server (Flask integration).

It is a real provider as far as Jan Server can tell: discovery, a JWKS with an RS256 key, an authorization endpoint
with PKCE (S256, required) and nonces, and a token endpoint that checks the client secret, the code, the redirect
URI and the code verifier, then answers with an ID token. The authorization endpoint approves at once for one
configured user, so a client following redirects (httpx) plays the browser. Tests can make it misbehave for the next
ID tokens (`id_token_overrides`, e.g. a wrong nonce or an expired token), and mint access tokens for a user with a
chosen audience and roles, as an app holding a token from the provider would present them.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import AuthorizationCodeMixin, UserInfo
from authlib.oidc.core.grants import OpenIDCode
from flask import Flask, jsonify
from joserfc import jwt
from joserfc.jwk import RSAKey
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from tests.support.ports import free_port

KEY_ID = "test-provider-key-1"


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@dataclass
class TestUser:
    __test__ = False  # not a pytest test class

    subject: str
    preferred_username: str
    email: str
    name: str
    # What the provider puts in tokens as Keycloak does: {"realm_access": {"roles": [...]}}.
    roles: list[str] = field(default_factory=list)


@dataclass
class _Client(ClientMixin):
    client_id: str
    client_secret: str
    redirect_uris: list[str]

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str) -> str:
        return " ".join(part for part in scope.split() if part in {"openid", "profile", "email"})

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class _Code(AuthorizationCodeMixin):
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    user: TestUser
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time


class TestOidcProvider:
    """`start()` it, register a client, then point Jan Server's JAN_OIDC_* settings at `issuer`."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.key = RSAKey.generate_key(2048, parameters={"kid": KEY_ID, "use": "sig", "alg": "RS256"})
        self.user = TestUser("subject-alice", "alice", "alice@example.com", "Alice Example")
        # Claims that replace the real ones in the next ID tokens (until reset): {"nonce": "forged"}, ...
        self.id_token_overrides: dict[str, Any] = {}
        self._clients: dict[str, _Client] = {}
        self._codes: dict[str, _Code] = {}
        self._server: BaseWSGIServer | None = None
        self.app = self._build_app()

    # -- what tests use -------------------------------------------------------------------------------------------

    def register_client(self, client_id: str, client_secret: str, redirect_uris: list[str]) -> None:
        self._clients[client_id] = _Client(client_id, client_secret, redirect_uris)

    def access_token(self, user: TestUser, *, audience: str, lifetime: int = 300, **claims: Any) -> str:
        """An access token as the provider would issue it to an app: RS256, `realm_access.roles` as Keycloak does."""
        now = int(time.time())
        payload = {
            "iss": self.issuer, "sub": user.subject, "aud": audience, "iat": now, "exp": now + lifetime,
            "preferred_username": user.preferred_username, "email": user.email, "name": user.name,
            "realm_access": {"roles": user.roles}, "scope": "openid profile email", **claims,
        }
        return jwt.encode({"alg": "RS256", "kid": KEY_ID}, payload, self.key)

    def start(self) -> None:
        self._server = make_server(
            "127.0.0.1", self.port, self.app, threaded=True, request_handler=_QuietHandler
        )
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -- the provider ---------------------------------------------------------------------------------------------

    def _build_app(self) -> Flask:
        app = Flask("test-oidc-provider")
        provider = self

        class CodeGrant(grants.AuthorizationCodeGrant):
            def save_authorization_code(self, code: str, req: Any) -> None:
                provider._codes[code] = _Code(
                    code=code, client_id=req.client.client_id, redirect_uri=req.payload.redirect_uri,
                    scope=req.payload.scope, nonce=req.payload.data.get("nonce"),
                    code_challenge=req.payload.data.get("code_challenge"),
                    code_challenge_method=req.payload.data.get("code_challenge_method"), user=req.user,
                )

            def query_authorization_code(self, code: str, client: _Client) -> _Code | None:
                found = provider._codes.get(code)
                return found if found is not None and found.client_id == client.client_id else None

            def delete_authorization_code(self, authorization_code: _Code) -> None:
                provider._codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code: _Code) -> TestUser:
                return authorization_code.user

        class IdTokens(OpenIDCode):
            def exists_nonce(self, nonce: str, req: Any) -> bool:
                return any(code.nonce == nonce for code in provider._codes.values())

            def resolve_client_private_key(self, client: _Client) -> RSAKey:
                return provider.key

            def get_client_algorithm(self, client: _Client) -> str:
                return "RS256"

            def get_encode_header(self, client: _Client) -> dict[str, str]:
                return {"alg": "RS256", "kid": KEY_ID}

            def get_client_claims(self, client: _Client) -> dict[str, Any]:
                return {"iss": provider.issuer, "aud": [client.client_id], "exp": int(time.time()) + 300}

            def get_authorization_code_claims(self, authorization_code: _Code) -> dict[str, Any]:
                return {**super().get_authorization_code_claims(authorization_code), **provider.id_token_overrides}

            def generate_user_info(self, user: TestUser, scope: str) -> UserInfo:
                return UserInfo(
                    sub=user.subject, preferred_username=user.preferred_username, email=user.email, name=user.name,
                    realm_access={"roles": user.roles},
                )

        server = AuthorizationServer(
            app, query_client=self._clients.get, save_token=lambda token, req: None
        )
        server.register_grant(CodeGrant, [IdTokens(require_nonce=True), CodeChallenge(required=True)])

        @app.get("/.well-known/openid-configuration")
        def discovery() -> Any:
            return jsonify({
                "issuer": provider.issuer,
                "authorization_endpoint": f"{provider.issuer}/authorize",
                "token_endpoint": f"{provider.issuer}/token",
                "jwks_uri": f"{provider.issuer}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            })

        @app.get("/jwks")
        def jwks() -> Any:
            return jsonify({"keys": [provider.key.as_dict(private=False)]})

        @app.get("/authorize")
        def authorize() -> Any:
            # The configured user has logged in and consented.
            try:
                grant = server.get_consent_grant(end_user=provider.user)
            except OAuth2Error as error:
                return server.handle_error_response(None, error)
            return server.create_authorization_response(grant=grant, grant_user=provider.user)

        @app.post("/token")
        def token() -> Any:
            return server.create_token_response()

        return app
