"""Who is calling, on every HTTP surface, and the protections every response gets.

- :func:`request_user` resolves a request to a user (or ``None``: anonymous) for the REST API and the console:
  HTTP Basic credentials of a team account, else a Hugging Face sign-in (the labeling app's OAuth session
  cookie, see :func:`oauth_name`); local mode has one local admin.
- :class:`ConsoleLogin` guards the Streamlit console (pages, websocket, static files) in team mode. Browsers
  send the cached Basic credentials (and the sign-in cookie) with the websocket upgrade, so one login is
  enough. The console is never open in team mode: without an account or a sign-in it answers 401.
- :func:`gradio_login` is the labeling app's login check, throttled like the others.
- :class:`SiteGuard` wraps the whole app: state-changing requests (and websocket upgrades) from another site
  are refused, since browsers resend cookies and cached Basic credentials from any page; and every response
  carries the security headers.

Every login surface goes through ``Directory.authenticate``: rate limited per account and client address,
answering 429 with Retry-After while locked.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import hashlib
import html
import json
import os
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.requests import cookie_parser
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.errors import PermissionDenied, TooManyAttempts, Unauthenticated
from core.labeling.identity import Directory, User, oauth_configured

OPEN_PREFIXES = ("/label", "/api", "/login/", "/logout")  # whole path segments: see open_path
SESSION_COOKIE = "session"  # Starlette's SessionMiddleware, as Gradio's OAuth sets it up
SESSION_MAX_AGE_S = 14 * 24 * 3600
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
_SECURE = re.compile(rb";\s*secure\b", re.IGNORECASE)  # the cookie attribute (a name may contain "secure")
_client: contextvars.ContextVar[str | None] = contextvars.ContextVar("client_address", default=None)


def basic_credentials(header: str) -> tuple[str | None, str | None]:
    if not header.lower().startswith("basic "):
        return None, None
    try:
        name, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return None, None
    return name, password


def oauth_secret() -> str | None:
    """The OAuth client secret when Hugging Face sign-in is configured as Gradio runs its real flow (see
    core.labeling.identity.oauth_configured), else None. Gradio's local "mocked" flow is never trusted: its key is
    public."""
    return os.environ["OAUTH_CLIENT_SECRET"] if oauth_configured() else None


def oauth_name(cookie: str | None) -> str | None:
    """The Hugging Face user name of a valid, unexpired sign-in, read from the labeling app's session cookie.

    Gradio's OAuth keeps the sign-in in Starlette's signed session cookie (itsdangerous TimestampSigner keyed by
    sha256(OAUTH_CLIENT_SECRET + "-v4"), base64 JSON with ``oauth_info``). Reading that same cookie here gives
    the console and the REST API the identity the labeling app has, with one sign-in. The format is Gradio's:
    tests/labeling/test_oauth.py signs in through the real flow, so a change there fails the tests, not users."""
    import itsdangerous

    secret = oauth_secret()
    if not secret or not cookie:
        return None
    signer = itsdangerous.TimestampSigner(hashlib.sha256((secret + "-v4").encode()).hexdigest())
    try:
        data = json.loads(base64.b64decode(signer.unsign(cookie.encode("latin-1"), max_age=SESSION_MAX_AGE_S)))
    except (itsdangerous.BadSignature, ValueError, binascii.Error, UnicodeError):
        return None
    info = data.get("oauth_info") if isinstance(data, dict) else None
    if (
        not isinstance(info, dict)
        or not isinstance(info.get("expires_at"), (int, float))
        or info["expires_at"] < time.time()
    ):
        return None
    name = (info.get("userinfo") or {}).get("preferred_username")
    return name if isinstance(name, str) and name else None


def client_address(scope: Scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


def credentials_user(
    directory: Directory, authorization: str, client: str | None, cookies: Mapping[str, str] | None = None
) -> User | None:
    """The user behind an Authorization header, else behind a Hugging Face sign-in cookie; None without either.
    Wrong credentials raise :class:`Unauthenticated`, a locked account or address :class:`TooManyAttempts`."""
    if not directory.team_mode:
        return directory.user(None)
    if authorization[:7].lower() == "bearer ":
        return directory.token_user(authorization[7:].strip(), client)
    name, password = basic_credentials(authorization)
    if name is not None:
        if not directory.authenticate(name, password or "", client):
            raise Unauthenticated(
                "Wrong account name or password",
                hint="check them; after several failures the account is locked for a while",
            )
        return directory.user(name)
    signed_in = oauth_name((cookies or {}).get(SESSION_COOKIE))
    return directory.oauth_user(signed_in) if signed_in else None


def request_user(studio: Any, request: Any) -> User | None:
    """The user behind a Starlette request (REST API, console)."""
    return credentials_user(
        studio.directory, request.headers.get("authorization", ""), client_address(request.scope), request.cookies
    )


def _retry_headers(exc: TooManyAttempts) -> dict[str, str]:
    return {"Retry-After": str(exc.retry_after)}


def gradio_login(directory: Directory):
    """The labeling app's login check (Gradio ``auth=``): throttled, off the event loop, 429 while locked."""
    from fastapi import HTTPException
    from starlette.concurrency import run_in_threadpool

    async def check(name: str, password: str) -> bool:
        try:
            return await run_in_threadpool(directory.authenticate, name, password, _client.get())
        except TooManyAttempts as exc:
            raise HTTPException(429, detail=f"{exc.message}: {exc.hint}", headers=_retry_headers(exc)) from exc

    return check


def open_path(path: str) -> bool:
    """Paths the console's login check leaves to their own app (the labeling app, the API, OAuth's forwarders).

    Matched by whole segments (``/api`` and ``/api/...``, never ``/apix``): a bare prefix match let ``/apix`` or
    ``/labelx`` past the login, to the console's shell."""
    return any(path == prefix or path.startswith(prefix.rstrip("/") + "/") for prefix in OPEN_PREFIXES)


class ConsoleLogin:
    def __init__(self, app: ASGIApp, directory: Directory) -> None:
        self.app, self.directory = app, directory

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self.directory.team_mode or open_path(scope["path"]):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        from starlette.concurrency import run_in_threadpool

        try:
            user = await run_in_threadpool(
                credentials_user,
                self.directory,
                headers.get(b"authorization", b"").decode("latin-1"),
                client_address(scope),
                cookie_parser(headers.get(b"cookie", b"").decode("latin-1")),
            )
        except TooManyAttempts as exc:
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008})
            response: Response = PlainTextResponse(
                f"{exc.message}. {exc.hint}.", status_code=429, headers=_retry_headers(exc)
            )
            return await response(scope, receive, send)
        except Unauthenticated:
            user = None
        except PermissionDenied as exc:  # e.g. a Hub sign-in named like a team account
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008})
            response = PlainTextResponse(f"{exc.message}: {exc.hint}.", status_code=403)
            return await response(scope, receive, send)
        if user is not None:
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        if oauth_secret():
            # Hugging Face sign-in: a page with the button (no Basic prompt; accounts may still send Basic)
            target = html.escape("/label/login/huggingface?" + urlencode({"_target_url": scope["path"]}))
            response = HTMLResponse(SIGN_IN_PAGE.format(target=target), status_code=401)
        else:
            response = PlainTextResponse(
                "Log in with your RLHF Studio team account.",
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="RLHF Studio", charset="UTF-8"'},
            )
        await response(scope, receive, send)


SIGN_IN_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>RLHF Studio · sign in</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:15vh auto;text-align:center}}
a.button{{display:inline-block;padding:.7rem 1.2rem;border-radius:.5rem;background:#ffd21e;color:#000;
text-decoration:none;font-weight:600}}</style></head><body><h1>RLHF Studio</h1>
<p>The console is for the team: sign in with your Hugging Face account.</p>
<p><a class="button" href="{target}">Sign in with Hugging Face</a></p></body></html>"""


def oauth_forwarders() -> list[Any]:
    """Root routes for Gradio's OAuth, which lives under /label: the sign-in button and Hugging Face's registered
    callback (https://SPACE_HOST/login/callback) use root paths. A button click comes back to the labeling app."""
    from starlette.routing import Route

    def forward(path: str, back_to_label_app: bool):
        async def endpoint(request: Any) -> RedirectResponse:
            query = dict(request.query_params)
            if back_to_label_app and query.get("_target_url", "/") == "/":
                query["_target_url"] = "/label/"
            return RedirectResponse(f"/label{path}?{urlencode(query)}", status_code=307)

        return endpoint

    return [
        Route("/login/huggingface", forward("/login/huggingface", True)),
        Route("/login/callback", forward("/login/callback", False)),
        Route("/logout", forward("/logout", True)),
    ]


class Isolated:
    """Mount the Gradio app with its own copy of the ASGI scope. Gradio's OAuth session middleware sets
    ``scope["session"]``; shared with Streamlit's around it, the sign-in would be copied into Streamlit's own
    cookie (without the Secure flag). ``routes`` stays visible for url_for."""

    def __init__(self, app: Any) -> None:
        self.app = app

    @property
    def routes(self) -> Any:
        return self.app.routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(dict(scope), receive, send)


def security_headers(on_space: bool) -> list[tuple[bytes, bytes]]:
    """Sent with every response. A Space shows the app inside huggingface.co's page, so framing is allowed
    there (only); elsewhere only the studio itself may frame its pages."""
    ancestors = "'self' https://huggingface.co https://*.hf.space" if on_space else "'self'"
    return [
        (b"content-security-policy", f"frame-ancestors {ancestors}; object-src 'none'; base-uri 'self'".encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"strict-origin-when-cross-origin"),
        (b"cross-origin-opener-policy", b"same-origin-allow-popups"),
    ]


def _same_site(scope: Scope) -> bool:
    """True unless the browser says the request comes from another site (Origin, else Referer)."""
    headers = dict(scope.get("headers") or [])
    source = headers.get(b"origin") or headers.get(b"referer")
    if not source:
        return True  # not sent by a browser on behalf of another page (curl, SDKs, same-origin GETs)
    origin = source.decode("latin-1")
    if origin == "null":
        return False
    host = (headers.get(b"x-forwarded-host") or headers.get(b"host") or b"").decode("latin-1").split(",")[0].strip()
    return urlsplit(origin).netloc.lower() == host.lower()


class SiteGuard:
    """Refuse cross-site writes and websocket upgrades; add the security headers; mark cookies Secure behind
    HTTPS. Bearer-token requests are exempt from the site check: browsers never add those on their own."""

    def __init__(self, app: ASGIApp, on_space: bool = False) -> None:
        self.app, self.headers = app, security_headers(on_space)
        self.names = {name for name, _ in self.headers}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        bearer = headers.get(b"authorization", b"").lower().startswith(b"bearer ")
        checked = scope["type"] == "websocket" or scope.get("method") in UNSAFE_METHODS
        if checked and not bearer and not _same_site(scope):
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008})
            response = JSONResponse(
                {
                    "error": {
                        "code": "cross_site",
                        "message": "Refused: this request came from another site",
                        "hint": "use the studio's own pages, or send a personal API token (Authorization: Bearer)",
                    }
                },
                403,
            )
            return await response(scope, receive, send)
        https = scope.get("scheme") == "https" or headers.get(b"x-forwarded-proto", b"").startswith(b"https")
        token = _client.set(client_address(scope))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = [(k, v) for k, v in message.get("headers", []) if k.lower() not in self.names]
                if https:
                    out = [
                        (k, v + b"; Secure" if k.lower() == b"set-cookie" and not _SECURE.search(v) else v)
                        for k, v in out
                    ]
                message = {**message, "headers": out + self.headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            _client.reset(token)


def label_user(studio: Any, request: Any, action: str) -> User:
    """The caller of a labeling-app action (Gradio request), allowed by app.access rule ``label:<action>``."""
    from app import access

    name = getattr(request, "username", None) if request is not None else None  # Gradio's password login
    user = (
        studio.directory.user(name)
        if name
        else credentials_user(studio.directory, "", None, getattr(request, "cookies", None))
    )
    access.require(user, f"label:{action}")
    assert user is not None  # require() raised for an anonymous caller
    return user
