"""A Space in team mode with "Sign in with Hugging Face", end to end in Chromium.

The studio runs as on a Space with ``hf_oauth: true`` (SYSTEM, SPACE_ID, OAUTH_* variables) except that the
OpenID provider is a loopback stand-in (tests/support/oidc_standin.py). One sign-in must give the same identity to
the labeling app, the console and the REST API; the console must never be open without it; STUDIO_ADMINS
decides who is an admin; a Hub name equal to a team account's is refused.
"""

from __future__ import annotations

import os
import re

import httpx
import pytest

from bench.harness.processes import free_port
from storage.db import Database
from tests.support import ARTIFACTS
from tests.support.browser import chat_and_vote, console_tab, set_max_new_tokens
from tests.support.oidc_standin import OidcStandin
from tests.support.servers import Server
from tests.support.studios import users_file


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    root = tmp_path_factory.mktemp("space")
    provider = OidcStandin().start()
    env = {
        **provider.env(),
        "STUDIO_AUTH_MODE": "team",
        "STUDIO_ADMINS": "boss",
        "STUDIO_USERS_FILE": str(users_file(root / "users.txt", "ada:pw-ada:admin")),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        srv = Server(root / "data", free_port()).start("--model", "tiny")
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    yield srv, provider
    srv.stop()
    provider.stop()


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_without_a_sign_in_the_console_is_closed_and_the_api_says_only_that_it_is_up(space):
    srv, _ = space
    console = httpx.get(srv.url + "/", timeout=30)
    assert console.status_code == 401 and "Sign in with Hugging Face" in console.text
    assert "/label/login/huggingface" in console.text
    assert httpx.get(srv.url + "/api/health", timeout=10).json() == {"status": "ok"}
    assert httpx.get(srv.url + "/api/jobs", timeout=10).status_code == 401
    forged = httpx.get(srv.url + "/api/jobs", cookies={"session": "eyJvYXV0aF9pbmZvIjp7fX0=.forged.sig"}, timeout=10)
    assert forged.status_code == 401
    assert httpx.get(srv.url + "/", auth=("ada", "pw-ada"), timeout=30).status_code == 200  # accounts still work


@pytest.mark.slow
def test_one_hugging_face_sign_in_labels_opens_the_console_and_the_api_and_admins_come_from_the_list(space, chromium):
    srv, provider = space
    ARTIFACTS.mkdir(exist_ok=True)
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()

    # 1. a labeler signs in from the labeling app and labels
    provider.sign_in_as("alice")
    page.goto(srv.url + "/label/")
    page.wait_for_selector("text=Sign in to label", timeout=60_000)  # nothing loads for a visitor
    page.get_by_role("button", name=re.compile("Sign in with Hugging Face")).click()
    page.get_by_role("button", name="Logout (alice)").wait_for(timeout=60_000)
    assert page.url.startswith(srv.url + "/label")
    set_max_new_tokens(page, "Sampling settings")
    chat_and_vote(page, "Hello, who are you?", "1", 1)
    page.screenshot(path=str(ARTIFACTS / "oauth-label-alice.png"), full_page=True)

    # 2. the same sign-in opens the console, as a labeler
    page.goto(srv.url + "/")
    console_tab(page, "Items")
    page.wait_for_selector("text=Recent items", timeout=60_000)
    listed = page.locator("[data-testid='stSidebarNav']").inner_text()
    assert "Runs" in listed and "Train" not in listed and "Export" not in listed
    page.wait_for_selector("text=Hello, who are you?", state="attached", timeout=60_000)  # her own item (a grid cell)

    # 3. and the REST API, with the cookie the browser holds
    cookies = {c["name"]: c["value"] for c in context.cookies() if c["name"] == "session"}
    jobs = httpx.get(srv.url + "/api/jobs", cookies=cookies, timeout=30)
    assert jobs.status_code == 200
    assert (
        httpx.post(
            srv.url + "/api/jobs",
            json={"algorithm": "dpo", "dry_run": True},
            cookies=cookies,
            headers={"Origin": srv.url},
            timeout=30,
        ).status_code
        == 403
    )
    assert (
        httpx.post(
            srv.url + "/api/jobs",
            json={"algorithm": "dpo", "dry_run": True},
            cookies=cookies,
            headers={"Origin": "https://evil.example"},
            timeout=30,
        ).json()["error"]["code"]
        == "cross_site"
    )

    # 4. signing out closes the console again
    page.goto(srv.url + "/logout")
    page.wait_for_url(re.compile(r".*/label/.*"), timeout=60_000)
    page.goto(srv.url + "/")
    page.wait_for_selector("text=Sign in with Hugging Face", timeout=60_000)

    # 5. someone in STUDIO_ADMINS signs in from the console's sign-in page and gets the admin pages
    provider.sign_in_as("boss")
    page.get_by_role("link", name="Sign in with Hugging Face").click()
    page.get_by_role("tab", name="Overview").wait_for(timeout=60_000)  # the Data page
    listed = page.locator("[data-testid='stSidebarNav']").inner_text()
    assert "Train" in listed and "Export" in listed
    page.screenshot(path=str(ARTIFACTS / "oauth-console-boss.png"), full_page=True)

    # 6. a Hub user named like a team account does not become that account
    page.goto(srv.url + "/logout")
    page.wait_for_url(re.compile(r".*/label/.*"), timeout=60_000)
    provider.sign_in_as("ada")
    page.goto(srv.url + "/")
    page.get_by_role("link", name="Sign in with Hugging Face").click()
    page.wait_for_selector("text=is the name of a team account", timeout=60_000)
    context.close()

    srv.stop()  # the last test of the module: read the database file directly
    db = Database.in_data_dir(srv.data_dir)
    try:
        assert db.query("SELECT name, role FROM users WHERE source = 'oauth' ORDER BY name") == [
            {"name": "alice", "role": "labeler"},
            {"name": "boss", "role": "admin"},
        ]
        assert db.query("SELECT u.name FROM preferences p JOIN users u ON u.id = p.labeler_id") == [{"name": "alice"}]
    finally:
        db.close()
