"""Assemble the one ASGI app: Streamlit console at ``/``, Gradio at ``/label``, REST API at ``/api``
(routed first, around the console's middleware).

Starlette does not run a mounted sub-app's lifespan, so Gradio's queue would never start (chats stuck
at "queue: 1/1"). The lifespan below enters the Gradio host app's lifespan explicitly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import gradio as gr
from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.responses import RedirectResponse
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api import create_api
from app.auth import ConsoleLogin, Isolated, SiteGuard, gradio_login, oauth_forwarders
from app.label import CSS, HEAD, THEME, create_label_app
from core.labeling.identity import oauth_configured
from core.studio import Studio, current

CONSOLE_SCRIPT = Path(__file__).resolve().parent.parent / "pages" / "console.py"


REDIRECTS = {"/manifest.json": "/label/manifest.json", "/label": "/label/"}  # see ApiFirst


class ApiFirst:
    """Send ``/api`` requests (and ``/metrics``) straight to the REST app, around the console's middleware stack.

    Streamlit wraps every route in its own middleware (sessions with cookie parsing, gzip, path checks,
    error pages). The REST API needs none of it, and under 20 labelers voting at once that stack cost
    about half of the server's CPU per vote. Everything else (lifespan included) goes to the console app.

    Also ``/manifest.json``: the labeling app's page links its web-app manifest at the site root (Gradio
    assumes it is mounted at ``/``), and browsers fetch manifests without credentials, so in team mode the
    console's login answered 401, an error in every labeler's browser console. It is the labeling app's own
    manifest, so it is sent there (its relative start URL and icons then resolve under ``/label/``).
    And ``/label`` without its slash, where Gradio's sign-out sends the browser: the console would serve it as
    an unknown page (or, in team mode, ask for the console's login).
    """

    def __init__(self, console: ASGIApp, api: ASGIApp, prefix: str = "/api") -> None:
        self.console, self.api, self.prefix = console, api, prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path in REDIRECTS:
            query = scope.get("query_string", b"").decode("latin-1")
            await RedirectResponse(REDIRECTS[path] + (f"?{query}" if query else ""), status_code=307)(
                scope, receive, send
            )
            return
        if scope["type"] == "http" and path == "/metrics":  # where Prometheus looks by default
            await self.api(scope, receive, send)
            return
        if scope["type"] == "http" and (path == self.prefix or path.startswith(self.prefix + "/")):
            root = scope.get("root_path", "")
            # what starlette's Mount would pass on: the prefix moves into root_path
            await self.api(
                {**scope, "root_path": root + self.prefix, "app_root_path": scope.get("app_root_path", root)},
                receive,
                send,
            )
            return
        await self.console(scope, receive, send)


def create_app(get_studio: Callable[[], Studio] = current) -> Any:
    """The ASGI app serving every UI of the process's studio. Every UI reaches the studio one way: the process-wide
    ``core.studio.current`` (opened by launch.py), which the console's pages call and the labeling app and the REST
    API are handed as ``get_studio`` (tests hand them their own)."""
    studio = get_studio()
    import streamlit as st  # imported late: Streamlit reads its config env vars at import
    from streamlit import config as st_config

    st_config.set_option("client.toolbarMode", "minimal")  # no "Deploy" button in a self-hosted studio
    # A self-hosted studio sends nothing anywhere. Streamlit's browser code otherwise fetches its usage-statistics
    # config from data.streamlit.io on every session. Set here, not by env: STREAMLIT_* variables are read only by
    # the `streamlit` command line, which st.App does not go through (launch.py's env default had no effect).
    st_config.set_option("browser.gatherUsageStats", False)

    directory = studio.directory
    # Hugging Face sign-in (a Space with hf_oauth) replaces the labeling app's password page; accounts then log
    # in to the console and the API with their password.
    signin = directory.team_mode and oauth_configured()
    team_login = gradio_login(directory) if directory.team_mode and directory.accounts and not signin else None
    gradio_host = gr.mount_gradio_app(
        FastAPI(),
        create_label_app(get_studio),
        path="/label",
        auth=team_login,
        auth_message="Log in with your RLHF Studio team account.",
        theme=THEME,
        css=CSS,
        head=HEAD,
        footer_links=["api", "settings"],
        ssr_mode=False,
    )
    gradio_app = next(r.app for r in gradio_host.routes if getattr(r, "path", None) == "/label")

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        from core.chain.service import service_for

        studio.warm_up()
        studio.supervisor.start()  # re-attach to running jobs, then watch the queue
        studio.reports.catch_up()  # "what changed" of versions whose job ended while the server was down
        service_for(studio)  # its worker collects contributions, cuts batches, anchors (studio.close stops it)
        async with gradio_host.router.lifespan_context(gradio_host):
            yield
        # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, so code after uvicorn.run() may
        # never run: release the database (and stop watching jobs) here, at the end of the lifespan.
        studio.close()

    api = create_api(get_studio, studio.settings.max_body_bytes)
    console = st.App(
        str(CONSOLE_SCRIPT),
        lifespan=lifespan,
        middleware=[Middleware(ConsoleLogin, directory=directory)],
        routes=[Mount("/label", app=Isolated(gradio_app)), *(oauth_forwarders() if signin else [])],
    )
    return SiteGuard(ApiFirst(console, api), on_space=studio.settings.on_space)
