"""Roles in team mode, through the real server: anonymous users write nothing, labelers reach no admin action
(REST API and console pages in a real browser), see only their own items and contributions, and cannot link
someone else's wallet."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from storage.db import Database
from tests.conftest import ROOT, Server, free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
ADA, BOB, CAT = ("ada", "pw-ada"), ("bob", "pw-bob"), ("cat", "pw-cat")
VOTE = {"answer_a": "x", "answer_b": "y", "outcome": "a"}


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    root = tmp_path_factory.mktemp("team")
    users = root / "users.txt"
    users.write_text("ada:pw-ada:admin\nbob:pw-bob:labeler\ncat:pw-cat:labeler\n")
    srv = Server(root / "data", free_port())
    saved = {k: os.environ.get(k) for k in ("STUDIO_AUTH_MODE", "STUDIO_USERS_FILE")}
    os.environ["STUDIO_AUTH_MODE"], os.environ["STUDIO_USERS_FILE"] = "team", str(users)
    try:
        srv.start("--model", "tiny")
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    for auth, text in ((BOB, "bob's private question"), (CAT, "cat's private question")):
        reply = httpx.post(srv.url + "/api/votes", json={**VOTE, "prompt": text}, auth=auth, timeout=10)
        assert reply.status_code == 201, reply.text
    yield srv
    srv.stop()


def test_anonymous_users_cannot_write_anything(team):
    for path, body in (("/api/votes", {**VOTE, "prompt": "p"}),
                       ("/api/feedback", {"prompt": "p", "response": "r", "score": 1.0}),
                       ("/api/jobs", {"algorithm": "dpo", "dry_run": True})):
        reply = httpx.post(team.url + path, json=body, timeout=10)
        assert reply.status_code in (401, 403) and reply.json()["error"]["code"] == "unauthorized", (path, reply.text)
    assert httpx.get(team.url + "/", timeout=10).status_code == 401          # the console wants a login too


def test_labelers_reach_no_admin_action_on_the_api(team):
    for method, path, body in (("POST", "/api/jobs", {"algorithm": "dpo", "dry_run": True}),
                               ("PATCH", "/api/policies/base", {"name": "mine"}),
                               ("DELETE", "/api/policies/base", None),
                               ("POST", "/api/jobs/1/cancel", None)):
        reply = httpx.request(method, team.url + path, json=body, auth=BOB, timeout=30)
        assert reply.status_code == 403, (method, path, reply.text)
    assert httpx.post(team.url + "/api/jobs", json={"algorithm": "dpo", "dry_run": True}, auth=ADA,
                      timeout=60).status_code != 403   # the admin may (and is told why it is refused, if it is)


def test_labelers_read_only_their_own_contributions(team):
    assert httpx.get(team.url + "/api/contributions/bob", auth=BOB, timeout=30).status_code == 200
    other = httpx.get(team.url + "/api/contributions/cat", auth=BOB, timeout=30)
    assert other.status_code == 403 and "own" in other.json()["error"]["message"]
    assert httpx.get(team.url + "/api/contributions/cat", auth=ADA, timeout=30).status_code == 200
    assert httpx.get(team.url + "/api/contributions/cat", timeout=30).status_code in (401, 403)


@pytest.fixture
def browser_context():
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield lambda credentials: browser.new_context(
            http_credentials={"username": credentials[0], "password": credentials[1]},
            viewport={"width": 1400, "height": 1000})
        browser.close()


@pytest.mark.slow
def test_a_labeler_in_the_console_sees_no_admin_action_no_one_elses_items_and_cannot_link_anothers_wallet(
        team, browser_context):
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser_context(BOB).new_page()
    for path in ("train", "export", "compare", "labeling"):
        page.goto(f"{team.url}/{path}")
        page.wait_for_selector("text=This page is for admins", timeout=60_000)
        assert "Traceback" not in page.content()
    page.screenshot(path=str(ARTIFACTS / "roles-labeler-train.png"), full_page=True)

    page.goto(team.url + "/")
    page.wait_for_selector("text=Recent items", timeout=60_000)
    page.wait_for_selector("text=Admin only: ask an admin to redact an item", timeout=60_000)
    grid = page.locator("[data-testid='stDataFrame']").last
    grid.wait_for(timeout=60_000)
    assert "cat's private question" not in page.content()

    page.goto(team.url + "/wallet")
    page.wait_for_selector("text=Your wallet", timeout=60_000)
    assert page.get_by_text("Batches (admin)").count() == 0
    someone_else, bob_key = Account.create(), Account.create()
    page.get_by_label("Address to link").fill(someone_else.address)
    page.get_by_role("button", name="Get the message to sign").click()
    code = page.locator("[data-testid='stCode']").first
    code.wait_for(timeout=60_000)
    message = code.inner_text().strip()
    assert someone_else.address in message and re.search(r"Nonce: \w+", message)
    forged = Account.sign_message(encode_defunct(text=message), private_key=bob_key.key).signature.to_0x_hex()
    page.get_by_label("Or paste the signature").fill(forged)
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Link this wallet").click()
    page.wait_for_selector(f"text=not {someone_else.address}", timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "roles-labeler-wallet.png"), full_page=True)
    team.stop()   # the last test of the module: read the database file directly
    db = Database.in_data_dir(team.data_dir)
    try:
        assert db.scalar("SELECT count(*) FROM wallet_links") == 0
    finally:
        db.close()
