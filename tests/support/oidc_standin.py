"""A loopback OpenID Connect provider standing in for huggingface.co in the sign-in tests.

It speaks what Gradio's OAuth (authlib) uses: discovery, an authorize endpoint that signs in whoever the test
says (no login form: the test plays the user), the token endpoint (authorization-code grant, client secret by
HTTP Basic or form) returning an RS256 id_token that echoes authlib's nonce, and the JWKS to verify it.
Gradio takes the provider's address from ``OPENID_PROVIDER_URL``, so the studio under test is configured
exactly as a Space with ``hf_oauth: true`` is, except for that URL.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
import urllib.parse
from typing import Any

import uvicorn
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route

from bench.harness.processes import free_port


class OidcStandin:
    """``start()`` serves on a free loopback port; ``sign_in_as(name)`` chooses who the next sign-in is."""

    def __init__(self, client_id: str = "studio-test-client", client_secret: str | None = None) -> None:
        self.client_id, self.client_secret = client_id, client_secret or secrets.token_urlsafe(24)
        self.key = RSAKey.generate_key(2048, parameters={"kid": "standin", "use": "sig", "alg": "RS256"})
        self.user = "alice"
        self.codes: dict[str, dict[str, Any]] = {}
        self.log: list[str] = []
        self.port = free_port()
        self._server: uvicorn.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, space_id: str = "team/rlhf-studio") -> dict[str, str]:
        """The variables a Space with ``hf_oauth: true`` gets, pointing at this provider."""
        return {
            "SYSTEM": "spaces",
            "SPACE_ID": space_id,
            "OAUTH_CLIENT_ID": self.client_id,
            "OAUTH_CLIENT_SECRET": self.client_secret,
            "OAUTH_SCOPES": "openid profile",
            "OPENID_PROVIDER_URL": self.url,
        }

    def sign_in_as(self, name: str) -> None:
        self.user = name

    def start(self) -> OidcStandin:
        app = Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self._discovery),
                Route("/oauth/authorize", self._authorize),
                Route("/oauth/token", self._token, methods=["POST"]),
                Route("/oauth/jwks", self._jwks),
            ]
        )
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        threading.Thread(target=self._server.run, name="oidc-standin", daemon=True).start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True

    async def _discovery(self, _: Request) -> JSONResponse:
        return JSONResponse(
            {
                "issuer": self.url,
                "authorization_endpoint": self.url + "/oauth/authorize",
                "token_endpoint": self.url + "/oauth/token",
                "jwks_uri": self.url + "/oauth/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "profile"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            }
        )

    async def _authorize(self, request: Request) -> Any:
        q = request.query_params
        self.log.append("authorize")
        if q.get("client_id") != self.client_id or q.get("response_type") != "code":
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        code = secrets.token_urlsafe(16)
        self.codes[code] = {
            "nonce": q.get("nonce"),
            "redirect_uri": q["redirect_uri"],
            "scope": q.get("scope", ""),
            "user": self.user,
        }
        sep = "&" if "?" in q["redirect_uri"] else "?"
        return RedirectResponse(
            q["redirect_uri"] + sep + urllib.parse.urlencode({"code": code, "state": q["state"]}), status_code=302
        )

    async def _token(self, request: Request) -> JSONResponse:
        form = dict(await request.form())
        self.log.append("token")
        client_id, secret = form.get("client_id"), form.get("client_secret")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            client_id, secret = urllib.parse.unquote(client_id), urllib.parse.unquote(secret)
        if (client_id, secret) != (self.client_id, self.client_secret):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        grant = self.codes.pop(str(form.get("code", "")), None)
        if (
            form.get("grant_type") != "authorization_code"
            or grant is None
            or form.get("redirect_uri") != grant["redirect_uri"]
        ):
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        now, name = int(time.time()), grant["user"]
        claims = {
            "sub": f"id-{name}",
            "preferred_username": name,
            "name": name.title(),
            "profile": f"https://huggingface.co/{name}",
            "picture": "https://example.invalid/avatar.png",
            "iss": self.url,
            "aud": self.client_id,
            "iat": now,
            "exp": now + 3600,
            "auth_time": now,
        }
        if grant["nonce"]:
            claims["nonce"] = grant["nonce"]
        id_token = jwt.encode({"alg": "RS256", "kid": "standin"}, claims, self.key)
        return JSONResponse(
            {
                "access_token": "hf_oauth_" + secrets.token_urlsafe(16),
                "token_type": "bearer",
                "expires_in": 28800,
                "scope": grant["scope"],
                "id_token": id_token,
            }
        )

    async def _jwks(self, _: Request) -> JSONResponse:
        return JSONResponse(KeySet([self.key]).as_dict(private=False))
