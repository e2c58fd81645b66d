"""Roles in team mode, through the real server: anonymous users write nothing, labelers reach no admin action
(REST API and console pages in a real browser), see only their own items and contributions, and cannot link
someone else's wallet."""

from __future__ import annotations

import re

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from storage.db import Database
from tests.support import ARTIFACTS
from tests.support.browser import console_tab
from tests.support.servers import team_server

ADA, BOB, CAT = ("ada", "pw-ada"), ("bob", "pw-bob"), ("cat", "pw-cat")
VOTE = {"answer_a": "x", "answer_b": "y", "outcome": "a"}


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    srv = team_server(tmp_path_factory.mktemp("team"), "ada:pw-ada:admin", "bob:pw-bob:labeler", "cat:pw-cat:labeler")
    for auth, text in ((BOB, "bob's private question"), (CAT, "cat's private question")):
        reply = httpx.post(srv.url + "/api/votes", json={**VOTE, "prompt": text}, auth=auth, timeout=10)
        assert reply.status_code == 201, reply.text
        reply = httpx.post(
            srv.url + "/api/feedback",
            json={"prompt": text, "response": f"{auth[0]}'s private feedback", "score": 1.0},
            auth=auth,
            timeout=10,
        )
        assert reply.status_code == 201, reply.text
    yield srv
    srv.stop()


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_anonymous_users_cannot_write_anything(team):
    for path, body in (
        ("/api/votes", {**VOTE, "prompt": "p"}),
        ("/api/feedback", {"prompt": "p", "response": "r", "score": 1.0}),
        ("/api/jobs", {"algorithm": "dpo", "dry_run": True}),
    ):
        reply = httpx.post(team.url + path, json=body, timeout=10)
        assert reply.status_code in (401, 403) and reply.json()["error"]["code"] == "unauthorized", (path, reply.text)
    assert httpx.get(team.url + "/", timeout=10).status_code == 401  # the console wants a login too


def test_labelers_reach_no_admin_action_on_the_api(team):
    for method, path, body in (
        ("POST", "/api/jobs", {"algorithm": "dpo", "dry_run": True}),
        ("PATCH", "/api/policies/base", {"name": "mine"}),
        ("DELETE", "/api/policies/base", None),
        ("POST", "/api/jobs/1/cancel", None),
        ("GET", "/api/backup", None),
        ("POST", "/api/backup", None),
        ("POST", "/api/backup/rewrite-history", None),
    ):
        reply = httpx.request(method, team.url + path, json=body, auth=BOB, timeout=30)
        assert reply.status_code == 403, (method, path, reply.text)
    assert (
        httpx.post(team.url + "/api/jobs", json={"algorithm": "dpo", "dry_run": True}, auth=ADA, timeout=60).status_code
        != 403
    )  # the admin may (and is told why it is refused, if it is)


# One request per REST route (app.access.API): what each role gets is decided by the rule table alone.
EXAMPLES = {
    "GET /health": ("GET", "/api/health", None),
    "GET /docs": ("GET", "/api/docs", None),
    "GET /openapi.json": ("GET", "/api/openapi.json", None),
    "GET /metrics": ("GET", "/metrics", None),
    "POST /feedback": ("POST", "/api/feedback", {"prompt": "p", "response": "r", "score": 1.0}),
    "POST /votes": ("POST", "/api/votes", {**VOTE, "prompt": "a vote from the access table"}),
    "GET /contributions/{name}": ("GET", "/api/contributions/bob", None),
    "GET /contributions/{name}/proof/{contribution_id}": ("GET", "/api/contributions/bob/proof/999", None),
    "GET /policies": ("GET", "/api/policies", None),
    "PATCH /policies/{name}": ("PATCH", "/api/policies/nosuch", {"name": "renamed"}),
    "DELETE /policies/{name}": ("DELETE", "/api/policies/nosuch", None),
    "GET /policies/{name}/report": ("GET", "/api/policies/nosuch/report", None),
    "POST /policies/{name}/report": ("POST", "/api/policies/nosuch/report", None),
    "GET /jobs": ("GET", "/api/jobs", None),
    "POST /jobs": ("POST", "/api/jobs", {"algorithm": "dpo", "dry_run": True}),
    "GET /jobs/{job_id}": ("GET", "/api/jobs/999", None),
    "POST /jobs/{job_id}/{action}": ("POST", "/api/jobs/999/cancel", None),
    "GET /policies/{name}/safety": ("GET", "/api/policies/nosuch/safety", None),
    "POST /policies/{name}/safety": ("POST", "/api/policies/nosuch/safety", None),
    "GET /policies/{name}/gate": ("GET", "/api/policies/nosuch/gate", None),
    "GET /policies/{name}/lineage": ("GET", "/api/policies/nosuch/lineage", None),
    "GET /judge-runs": ("GET", "/api/judge-runs", None),
    "POST /judge-runs": ("POST", "/api/judge-runs", {"judge": "rm9", "estimate": True}),
    "GET /judge-runs/{run_id}": ("GET", "/api/judge-runs/999", None),
    "POST /judge-runs/{run_id}/cancel": ("POST", "/api/judge-runs/999/cancel", None),
    "GET /judges/agreement": ("GET", "/api/judges/agreement?judge=ai:rm:rm9", None),
    "GET /policies/{name}/benchmarks": ("GET", "/api/policies/nosuch/benchmarks", None),
    "POST /policies/{name}/benchmarks": ("POST", "/api/policies/nosuch/benchmarks", None),
    "GET /backup": ("GET", "/api/backup", None),
    "POST /backup": ("POST", "/api/backup", None),
    "POST /backup/rewrite-history": ("POST", "/api/backup/rewrite-history", None),
}


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_every_route_answers_each_role_as_its_rule_says(team):
    from app import access

    assert set(EXAMPLES) == set(access.API), "add an example request for every new route"
    for key, (method, path, body) in EXAMPLES.items():
        for role, auth in (("anonymous", None), ("labeler", BOB), ("admin", ADA)):
            reply = httpx.request(method, team.url + path, json=body, auth=auth, timeout=60)
            granted = access.API[key].for_role(role)
            if granted == access.NONE:
                expected = 401 if auth is None else 403
                assert reply.status_code == expected, (key, role, reply.status_code, reply.text)
                assert reply.json()["error"]["code"] in ("unauthorized", "forbidden"), (key, role, reply.text)
            else:
                assert reply.status_code not in (401, 403, 500), (key, role, reply.status_code, reply.text)


def test_anonymous_clients_get_a_minimal_health_answer_and_labelers_no_paths(team):
    assert httpx.get(team.url + "/api/health", timeout=10).json() == {"status": "ok"}
    labeler = httpx.get(team.url + "/api/health", auth=BOB, timeout=10).json()
    assert labeler["status"] == "ok" and not {"data_dir", "model_path", "model"} & set(labeler)
    assert "data_dir" in httpx.get(team.url + "/api/health", auth=ADA, timeout=10).json()


def test_cross_site_writes_are_refused_and_every_response_has_security_headers(team):
    evil = {"Origin": "https://evil.example"}
    for method, path in (("POST", "/api/jobs/1/cancel"), ("POST", "/api/votes"), ("POST", "/label/login")):
        reply = httpx.request(method, team.url + path, headers=evil, auth=ADA, timeout=10)
        assert reply.status_code == 403 and reply.json()["error"]["code"] == "cross_site", (path, reply.text)
    same = httpx.post(team.url + "/api/jobs/999/cancel", headers={"Origin": team.url}, auth=ADA, timeout=10)
    assert same.status_code == 404  # same site: on to the route
    referer = httpx.post(
        team.url + "/api/jobs/999/cancel", headers={"Referer": "https://evil.example/x"}, auth=ADA, timeout=10
    )
    assert referer.status_code == 403
    login = {"username": "bob", "password": "pw-bob"}
    plain = httpx.post(team.url + "/label/login", data=login, headers={"Origin": team.url}, timeout=30)
    secure = re.compile(r";\s*secure\b", re.IGNORECASE)  # the attribute (a cookie's name may say "unsecure")
    assert plain.status_code == 200 and not all(secure.search(c) for c in plain.headers.get_list("set-cookie"))
    behind_https = httpx.post(
        team.url + "/label/login", data=login, timeout=30, headers={"Origin": team.url, "X-Forwarded-Proto": "https"}
    )
    cookies = behind_https.headers.get_list("set-cookie")
    assert cookies and all(secure.search(c) for c in cookies)  # every cookie Secure behind HTTPS
    for path in ("/", "/label/", "/api/health"):
        headers = httpx.get(team.url + path, auth=ADA, timeout=30).headers
        assert "frame-ancestors 'self'" in headers["content-security-policy"], path
        assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"], path


def test_wrong_passwords_lock_the_account_on_every_login_surface(team):
    eve = ("eve", "not-her-password")
    for _ in range(5):
        assert httpx.get(team.url + "/api/jobs", auth=eve, timeout=30).status_code == 401
    locked = httpx.get(team.url + "/api/jobs", auth=eve, timeout=30)
    assert locked.status_code == 429 and locked.json()["error"]["code"] == "too_many_attempts"
    assert 1 <= int(locked.headers["retry-after"]) <= 30
    console = httpx.get(team.url + "/", auth=eve, timeout=30)
    assert console.status_code == 429 and "retry-after" in console.headers
    gradio = httpx.post(
        team.url + "/label/login", data={"username": "eve", "password": "x"}, headers={"Origin": team.url}, timeout=30
    )
    assert gradio.status_code == 429 and "retry-after" in gradio.headers
    assert httpx.get(team.url + "/api/jobs", auth=BOB, timeout=30).status_code == 200  # others log in


def test_feedback_records_its_sender_and_an_idempotency_key_stores_once(team):
    body = {"prompt": "p", "response": "r", "score": 0.5, "idempotency_key": "fb-1"}
    first = httpx.post(team.url + "/api/feedback", json=body, auth=BOB, timeout=30).json()
    again = httpx.post(team.url + "/api/feedback", json=body, auth=BOB, timeout=30).json()
    other = httpx.post(team.url + "/api/feedback", json=body, auth=CAT, timeout=30).json()
    assert first["created"] and again == {**first, "created": False}
    assert other["created"] and other["id"] != first["id"]  # keys are per sender


def test_labelers_read_only_their_own_contributions(team):
    assert httpx.get(team.url + "/api/contributions/bob", auth=BOB, timeout=30).status_code == 200
    other = httpx.get(team.url + "/api/contributions/cat", auth=BOB, timeout=30)
    assert other.status_code == 403 and "own" in other.json()["error"]["message"]
    assert httpx.get(team.url + "/api/contributions/cat", auth=ADA, timeout=30).status_code == 200
    assert httpx.get(team.url + "/api/contributions/cat", timeout=30).status_code in (401, 403)


def test_labelers_get_versions_without_paths_or_configs(team):
    labeler = httpx.get(team.url + "/api/policies", auth=BOB, timeout=30)
    assert labeler.status_code == 200, labeler.text
    versions = {p["name"]: p for p in labeler.json()["policies"]}
    assert versions["v1"]["parent"] == "base" and versions["v1"]["metrics"] == {"loss": 0.5}
    assert not {"adapter_path", "config", "base_model"} & {key for p in versions.values() for key in p}
    assert str(team.data_dir) not in labeler.text and "/runs/" not in labeler.text
    admin = {p["name"]: p for p in httpx.get(team.url + "/api/policies", auth=ADA, timeout=30).json()["policies"]}
    assert admin["v1"]["adapter_path"] == str(team.data_dir / "runs" / "v1" / "adapter")
    assert admin["v1"]["config"]["beta"] == 0.1 and admin["base"]["base_model"] == "tiny"


def test_a_vote_naming_another_labeler_is_refused_and_stores_nothing(team):
    def vote(labeler, key, auth=BOB):
        body = {**VOTE, "prompt": f"whose vote is {key}?", "idempotency_key": key}
        return httpx.post(
            team.url + "/api/votes",
            json=body if labeler is None else {**body, "labeler": labeler},
            auth=auth,
            timeout=30,
        )

    saved = vote(None, "named-1")
    assert saved.status_code == 201 and saved.json()["created"], saved.text
    refused = vote("cat", "named-1")
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert error["code"] == "forbidden" and "'cat'" in error["message"] and "labeler" in error["hint"]
    assert vote(None, "named-1").json() == {**saved.json(), "created": False}  # bob's saved vote is still there
    assert vote("cat", "named-2").status_code == 403
    assert vote("bob", "named-2").json()["created"] is True  # the refused one stored nothing under that key
    assert vote("bob", "named-2").json()["created"] is False  # naming oneself is fine
    assert vote("bob", "named-3", auth=ADA).status_code == 403  # admins vote as themselves too


def test_the_console_login_matches_whole_path_segments(team):
    for path in ("/apix", "/labelx", "/logoutx", "/api-docs", "/label.html"):
        reply = httpx.get(team.url + path, timeout=30)
        assert reply.status_code == 401 and "www-authenticate" in reply.headers, (path, reply.status_code)
    assert httpx.get(team.url + "/api/health", timeout=30).json() == {"status": "ok"}
    assert httpx.get(team.url + "/api", timeout=30).json()["error"]["code"] == "not_found"  # the API's own answer
    label = httpx.get(team.url + "/label/", timeout=30)
    assert label.status_code == 200 and "www-authenticate" not in label.headers  # the labeling app's login page


@pytest.fixture
def browser_context(chromium):
    return lambda credentials: chromium.new_context(
        http_credentials={"username": credentials[0], "password": credentials[1]},
        viewport={"width": 1400, "height": 1000},
    )


@pytest.mark.slow
def test_a_labeler_in_the_console_sees_no_admin_action_no_one_elses_items_and_cannot_link_anothers_wallet(
    team, browser_context
):
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser_context(BOB).new_page()
    page.goto(team.url + "/")
    page.get_by_role("tab", name="Items").wait_for(timeout=60_000)
    nav = page.locator("[data-testid='stSidebarNav']")
    nav.wait_for(timeout=60_000)
    listed = nav.inner_text()
    assert "Data" in listed and "Runs" in listed and "Wallet" in listed
    for title in ("Train", "Export", "Compare", "Labeling setup"):  # admin pages are not even listed
        assert title not in listed, listed
    for path in ("train", "export", "compare", "labeling"):
        page.goto(f"{team.url}/{path}")
        page.wait_for_selector("text=This page is for admins", timeout=60_000)  # said, not the Data page instead
        assert page.get_by_text("Recent items").count() == 0 and "Traceback" not in page.content()
        assert page.get_by_role("button", name="Dry run").count() == 0
    page.screenshot(path=str(ARTIFACTS / "roles-labeler-train.png"), full_page=True)

    page.goto(team.url + "/")
    console_tab(page, "Items")
    page.wait_for_selector("text=Recent items", timeout=60_000)
    page.wait_for_selector("text=Admin only: ask an admin to redact an item", timeout=60_000)
    page.wait_for_selector("text=Your recent scored feedback", timeout=60_000)
    grid = page.locator("[data-testid='stDataFrame']").last
    grid.wait_for(timeout=60_000)
    page.wait_for_timeout(1000)
    content = page.content()
    assert "cat's private question" not in content and "cat's private feedback" not in content
    assert page.get_by_text("Audit log").count() == 0
    console_tab(page, "Training data")
    page.get_by_role("button", name="Build preview").click()
    page.wait_for_selector("text=Built from your own labels only", timeout=60_000)
    page.wait_for_selector(r"text=/\d+ rows\./", timeout=60_000)  # bob's votes only
    assert "cat's private question" not in page.content()

    page.goto(team.url + "/settings")
    page.wait_for_selector("text=Paths, endpoints and files are shown to admins only", timeout=60_000)
    assert str(team.data_dir) not in page.content()

    # a personal API token: created on the Account page, shown once, works as bob (a labeler), then revoked
    page.goto(team.url + "/account")
    page.get_by_label("What is it for?").fill("labeling script")
    page.get_by_role("button", name="Create token").click()
    page.wait_for_selector("text=Copy it now", timeout=60_000)
    token = page.locator("[data-testid='stCode']").first.inner_text().strip()
    assert token.startswith("rlhf_")
    bearer = {"Authorization": f"Bearer {token}", "Origin": "https://elsewhere.example"}  # tokens: no CSRF check
    vote = httpx.post(team.url + "/api/votes", json={**VOTE, "prompt": "sent with a token"}, headers=bearer, timeout=30)
    assert vote.status_code == 201, vote.text
    assert httpx.get(team.url + "/api/contributions/bob", headers=bearer, timeout=30).status_code == 200
    assert (
        httpx.post(
            team.url + "/api/jobs", json={"algorithm": "dpo", "dry_run": True}, headers=bearer, timeout=30
        ).status_code
        == 403
    )
    page.reload()
    page.wait_for_selector("text=Token to revoke", timeout=60_000)
    assert "bob: labeling script (rlhf_" in page.content() and token not in page.content()  # never shown again
    page.get_by_role("button", name="Revoke").click()
    page.wait_for_selector("text=it stops working now", timeout=60_000)
    gone = httpx.post(team.url + "/api/votes", json={**VOTE, "prompt": "after revoking"}, headers=bearer, timeout=30)
    assert gone.status_code == 401 and "revoked" in gone.json()["error"]["message"]

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
    team.stop()  # the last test of the module: read the database file directly
    db = Database.in_data_dir(team.data_dir)
    try:
        assert db.scalar("SELECT count(*) FROM wallet_links") == 0
    finally:
        db.close()
