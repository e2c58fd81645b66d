"""Team-mode login for the Streamlit console: HTTP Basic against the team accounts.

The Gradio app (/label) has its own login page and the API (/api) checks credentials per request, so
this middleware guards everything else (the console's pages, its websocket and static files).
Browsers send the cached Basic credentials with the websocket upgrade, so one prompt is enough.
"""
from __future__ import annotations

import base64

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from core.identity import Directory

OPEN_PREFIXES = ("/label", "/api")


def basic_credentials(header: str) -> tuple[str | None, str | None]:
    if not header.lower().startswith("basic "):
        return None, None
    try:
        name, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return None, None
    return name, password


class ConsoleLogin:
    def __init__(self, app: ASGIApp, directory: Directory) -> None:
        self.app, self.directory = app, directory

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] not in ("http", "websocket") or not self.directory.team_mode
                or not self.directory.accounts or scope["path"].startswith(OPEN_PREFIXES)):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        name, password = basic_credentials(headers.get(b"authorization", b"").decode("latin-1"))
        if name is not None and self.directory.authenticate(name, password or ""):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        response = PlainTextResponse("Log in with your RLHF Studio team account.", status_code=401,
                                     headers={"WWW-Authenticate": 'Basic realm="RLHF Studio", charset="UTF-8"'})
        await response(scope, receive, send)
