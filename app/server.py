"""Assemble the one ASGI app: Streamlit console at ``/``, Gradio at ``/label``, REST API at ``/api``.

Starlette does not run a mounted sub-app's lifespan, so Gradio's queue would never start (chats stuck
at "queue: 1/1"). The lifespan below enters the Gradio host app's lifespan explicitly.
"""
from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import gradio as gr
from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.routing import Mount

from app.api import create_api
from app.auth import ConsoleLogin
from app.label import CSS, HEAD, create_label_app
from core.studio import Studio, current

CONSOLE_SCRIPT = Path(__file__).resolve().parent.parent / "pages" / "console.py"


def create_app(studio: Studio) -> Any:
    """The ASGI app serving every UI of ``studio``."""
    import streamlit as st  # imported late: Streamlit reads its config env vars at import
    from streamlit import config as st_config

    st_config.set_option("client.toolbarMode", "minimal")  # no "Deploy" button in a self-hosted studio

    directory = studio.directory
    team_login = directory.authenticate if directory.team_mode and directory.accounts else None
    gradio_host = gr.mount_gradio_app(FastAPI(), create_label_app(current), path="/label", auth=team_login,
                                      auth_message="Log in with your RLHF Studio team account.",
                                      css=CSS, head=HEAD, footer_links=["api", "settings"], ssr_mode=False)
    gradio_app = next(r.app for r in gradio_host.routes if getattr(r, "path", None) == "/label")

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        studio.warm_up()
        studio.supervisor.start()  # re-attach to running jobs, then watch the queue
        async with gradio_host.router.lifespan_context(gradio_host):
            yield
        # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, so code after uvicorn.run() may
        # never run: release the database (and stop watching jobs) here, at the end of the lifespan.
        studio.close()

    return st.App(
        str(CONSOLE_SCRIPT),
        lifespan=lifespan,
        middleware=[Middleware(ConsoleLogin, directory=directory)],
        routes=[
            Mount("/api", app=create_api(current, studio.settings.max_body_bytes)),
            Mount("/label", app=gradio_app),
        ],
    )
