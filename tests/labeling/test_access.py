"""The one authorization policy (app.access): every surface has a rule, and the rules say what the README
says.

These tests read the surfaces themselves (the REST app's routes, the console's page list and each page's source,
the labeling app's events) so that a new route, page, section or action without a rule fails here. What each
role actually gets through the real server is tested in test_roles.py.
"""

from __future__ import annotations

import ast
import re
import time

import pytest

from app import access
from core.config import load_settings
from core.errors import PermissionDenied, TooManyAttempts, Unauthenticated
from core.labeling.identity import Directory, LoginThrottle, User
from storage.db import Database
from tests.support import ROOT
from tests.support.studios import users_file

PAGES = ROOT / "pages"
ADMIN, LABELER = User(1, "ada", "admin"), User(2, "bob", "labeler")


def api_routes() -> set[str]:
    from fastapi.routing import APIRoute

    from app.api import create_api

    app = create_api(lambda: None, 1000)
    while not hasattr(app, "routes"):
        app = app.app  # BodyLimit wraps the FastAPI app
    routes = [r for route in app.routes for r in getattr(getattr(route, "original_router", None), "routes", [route])]
    return {f"{method} {route.path}" for route in routes if isinstance(route, APIRoute) for method in route.methods}


def test_every_rest_route_has_a_rule_and_every_rule_a_route():
    assert api_routes() == set(access.API)


def console_pages() -> list[str]:
    """The page files listed in the console's navigation."""
    tree = ast.parse((PAGES / "console.py").read_text())
    return [
        node.value.removesuffix(".py")
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(r"\w+\.py", node.value)
    ]


def test_every_console_page_has_a_rule_and_checks_it_first():
    pages = console_pages()
    assert {"data", "train", "runs", "settings", "wallet"} <= set(pages)
    for name in pages:
        assert f"page:{name}" in access.CONSOLE, f"pages/{name}.py has no rule 'page:{name}' in app/access.py"
        source = (PAGES / f"{name}.py").read_text()
        assert f'require_page("{name}")' in source, f"pages/{name}.py does not call require_page({name!r})"
    assert {k.removeprefix("page:") for k in access.CONSOLE if k.startswith("page:")} == set(pages)


def test_every_section_a_page_asks_about_has_a_rule():
    asked = set()
    for path in PAGES.glob("*.py"):
        asked |= set(
            re.findall(
                r"""(?:can|access\.scope|access\.owner_filter|access\.can)\(\w+, ["']([^"']+)["']\)""", path.read_text()
            )
        )
    assert asked, "the pages ask app.access nothing"
    assert asked <= set(access.RULES), asked - set(access.RULES)
    sections = {k for k in access.CONSOLE if not k.startswith("page:")}
    assert sections <= asked, f"rules no page asks about: {sections - asked}"


def test_every_labeling_app_action_has_a_rule(tiny_model_dir, tmp_path):
    from app.label import create_label_app
    from core.studio import Studio

    studio = Studio(load_settings({"data_dir": str(tmp_path), "model": "tiny"}, env={}), tiny_model_dir)
    try:
        blocks = create_label_app(lambda: studio)
        names = {fn.api_name for fn in blocks.fns.values() if fn.api_name}
    finally:
        studio.close()
    assert names and names == set(access.LABEL_APP), names ^ set(access.LABEL_APP)


@pytest.mark.parametrize(
    "resource, anonymous, labeler, admin",
    [
        ("api GET /health", "summary", "summary", "all"),
        ("api POST /votes", "none", "own", "all"),
        ("api POST /jobs", "none", "none", "all"),
        ("api GET /jobs/{job_id}", "none", "summary", "all"),
        ("api GET /policies", "none", "summary", "all"),
        ("data.audit_log", "none", "none", "all"),
        ("data.recent_items", "none", "own", "all"),
        ("data.training_set", "none", "own", "all"),
        ("settings.values", "none", "summary", "all"),
        ("no such surface", "none", "none", "none"),
    ],
)
def test_the_rules_table(resource, anonymous, labeler, admin):
    assert [access.scope(u, resource) for u in (None, LABELER, ADMIN)] == [anonymous, labeler, admin]


def test_require_refuses_with_the_right_error():
    with pytest.raises(Unauthenticated):
        access.require(None, "api POST /votes")
    with pytest.raises(PermissionDenied, match="Only admins"):
        access.require(LABELER, "api POST /jobs")
    with pytest.raises(PermissionDenied, match="own"):
        access.require(LABELER, "api GET /contributions/{name}", owner="cat")
    assert access.require(LABELER, "api GET /contributions/{name}", owner="bob") == "own"
    with pytest.raises(PermissionDenied, match="No access rule"):
        access.require(ADMIN, "api GET /new-route-without-a-rule")
    assert access.owner_filter(LABELER, "data.scored_feedback") == 2
    assert access.owner_filter(ADMIN, "data.scored_feedback") is None


def test_views_leave_out_what_a_role_may_not_see():
    health = {
        "status": "ok",
        "version": "1",
        "model_status": "ready",
        "chat_dtype": "float32",
        "data_dir": "/secret/dir",
        "model_path": "/secret/model",
        "storage_ephemeral": False,
    }
    assert access.health_view(health, None) == {"status": "ok"}
    assert "data_dir" not in access.health_view(health, LABELER) and "model_path" not in access.health_view(
        health, LABELER
    )
    assert access.health_view(health, ADMIN) == health
    job = {"id": 1, "status": "failed", "error": "Traceback /home/x", "run_dir": "/runs/1", "config": {}}
    assert access.job_view(job, "summary") == {"id": 1, "status": "failed"}
    policy = {
        "id": 2,
        "name": "v1",
        "parent": "base",
        "base_model": "/secret/model",
        "adapter_path": "/runs/v1",
        "config": {"model_path": "/runs/v1"},
        "metrics": {"loss": 0.5},
    }
    assert access.policy_view(policy, "summary") == {"id": 2, "name": "v1", "parent": "base", "metrics": {"loss": 0.5}}
    assert access.policy_view(policy, "all") == policy


def test_settings_hide_paths_and_endpoints_from_labelers(tmp_path):
    settings = load_settings(
        {"data_dir": str(tmp_path)},
        env={"STUDIO_CHAIN_RPC_URL": "http://10.0.0.9:8545", "HF_ENDPOINT": "http://hub.internal"},
    )
    everything, public = settings.public_dict(), settings.public_dict(admin=False)
    assert everything["chain_rpc_url"] == "http://10.0.0.9:8545"
    assert not {"data_dir", "chain_rpc_url", "hub_endpoint", "users_file", "model"} & set(public)
    assert {"chat_dtype", "auth_mode", "chain_id"} <= set(public)


def test_login_throttle_locks_growing_and_forgives_the_account_on_success():
    throttle = LoginThrottle(account_limit=3, client_limit=6, base_s=10, max_s=40)
    for _ in range(2):
        throttle.check("ada", "1.2.3.4")
        throttle.failed("ada", "1.2.3.4")
    throttle.check("ada", "1.2.3.4")  # two failures do not lock
    throttle.failed("ada", "1.2.3.4")  # the third does
    with pytest.raises(TooManyAttempts) as locked:
        throttle.check("ada", "9.9.9.9")  # the account is locked from every address
    assert 9 <= locked.value.retry_after <= 10 and locked.value.http_status == 429
    throttle.check("bob", "1.2.3.4")  # the address is not locked yet (3 of 5)
    for _ in range(3):
        throttle.failed("ada", "1.2.3.4")
    with pytest.raises(TooManyAttempts) as longer:
        throttle.check("ada", None)
    assert longer.value.retry_after == 40  # 10, 20, 40, capped at 40
    with pytest.raises(TooManyAttempts):
        throttle.check("bob", "1.2.3.4")  # six failures from this address: locked for everyone there
    throttle.succeeded("ada")
    throttle.check("ada", "5.5.5.5")


def test_unknown_names_cost_the_same_as_wrong_passwords(tmp_path):
    users = users_file(tmp_path / "users.txt", "ada:right:admin")
    settings = load_settings(
        {"data_dir": str(tmp_path)}, env={"STUDIO_AUTH_MODE": "team", "STUDIO_USERS_FILE": str(users)}
    )
    directory = Directory(settings, Database(tmp_path / "s.duckdb"))
    directory.authenticate("nobody", "x")  # the first unknown name builds the dummy hash once

    def timed(name: str) -> float:
        times = []
        for i in range(3):
            start = time.perf_counter()
            assert not directory.authenticate(name, f"wrong-{i}", f"10.0.0.{i}")
            times.append(time.perf_counter() - start)
            directory.throttle = LoginThrottle()
        return sorted(times)[1]

    unknown, wrong = timed("nobody"), timed("ada")
    assert 0.5 < unknown / wrong < 2.0, (unknown, wrong)
    assert directory.authenticate("ada", "right")


def test_personal_api_tokens_are_shown_once_stored_hashed_scoped_and_revocable(tmp_path):
    from core.labeling import tokens
    from core.labeling.identity import ensure_user

    db = Database(tmp_path / "s.duckdb")
    ada, bob = ensure_user(db, "ada", "admin", "file"), ensure_user(db, "bob", "labeler", "file")
    verifier = tokens.TokenVerifier(db)
    script = tokens.create_token(db, bob, "labeling script")
    assert script.token.startswith("rlhf_") and len(script.token) > 40
    assert (
        db.scalar("SELECT count(*) FROM api_tokens WHERE token_hash = ? OR prefix = ?", [script.token, script.token])
        == 0
    )  # only a hash and a short prefix
    assert verifier.user(script.token) == User(bob.id, "bob", "labeler")
    assert db.scalar("SELECT last_used_at FROM api_tokens WHERE id = ?", [script.id]) is not None
    with pytest.raises(PermissionDenied, match="admin tokens"):
        tokens.create_token(db, bob, "sneaky", "admin")
    label_only = tokens.create_token(db, ada, "votes only", "label")
    admin_token = tokens.create_token(db, ada, "ops", "admin")
    assert verifier.user(label_only.token).role == "labeler" and verifier.user(admin_token.token).role == "admin"
    assert [t["name"] for t in tokens.list_tokens(db, bob)] == ["labeling script"]
    assert len(tokens.list_tokens(db, ada, everyone=True)) == 3
    with pytest.raises(PermissionDenied):
        tokens.list_tokens(db, bob, everyone=True)
    with pytest.raises(PermissionDenied, match="your own"):
        tokens.revoke_token(db, bob, admin_token.id)
    tokens.revoke_token(db, ada, script.id)  # admins revoke anyone's
    with pytest.raises(Unauthenticated, match="revoked"):
        verifier.user(script.token)
    with pytest.raises(Unauthenticated):
        verifier.user("rlhf_" + "x" * 43)
    db.write(lambda cur: cur.execute("UPDATE users SET role = 'labeler' WHERE id = ?", [ada.id]))
    assert verifier.user(admin_token.token).role == "labeler"  # only while the owner is an admin
    db.close()


def _page_text(app) -> str:
    """Everything a viewer can read on an AppTest page: text elements, buttons, expanders, table cells."""
    parts = [
        str(e.value)
        for kind in (
            "title",
            "header",
            "subheader",
            "markdown",
            "caption",
            "info",
            "warning",
            "success",
            "error",
            "code",
        )
        for e in getattr(app, kind)
    ]
    parts += [str(b.label) for b in app.button] + [str(e.label) for e in app.expander]
    parts += [frame.value.to_csv() for frame in [*app.dataframe, *app.table]]
    return "\n".join(parts)


# Per section with a rule: text a viewer with scope "all" sees, and text a viewer with a narrower scope ("own" or
# "summary") sees instead (None: that section has no narrower scope, so the first text means "not none").
SECTION_MARKERS = {
    "data.redact": ("Redaction deletes the text for good", None),
    "data.audit_log": ("Audit log", None),
    "data.scored_feedback": ("Recent scored feedback", "Your recent scored feedback"),
    "data.training_set": ("Build preview", "Built from your own labels only"),
    "data.recent_items": ("Recent items", None),
    "data.import": ("Nothing is written until you confirm", None),
    "data.judge_runs": ("Judge runs (", None),
    "data.judge_disagreements": ("Disagreements to read", None),
    "settings.values": ("setting: data_dir", "Paths, endpoints and files are shown to admins only"),
    "settings.backup": ("Back up now", None),
    "account.everyone": ("Everyone's tokens (admin)", None),
}


def seed_judge_disagreement(studio, person) -> None:
    """``person`` votes A on a pair of their chat; an AI judge's run says B: a disagreement with cat's text."""
    from core.judging import judges, runs as judging
    from core.labeling.identity import ensure_ai_labeler
    from core.labeling.votes import CandidateIn, Vote, record_vote, write_prompt_pair

    with studio.db.transaction() as cur:
        _, _, a, b = write_prompt_pair(
            cur,
            person,
            "cat's secret judged prompt",
            None,
            CandidateIn("cat's secret A", None),
            CandidateIn("cat's secret B", None),
            None,
        )
        run_id = cur.execute(
            "INSERT INTO judge_runs (judge, spec, source, status, total) VALUES"
            " ('ai:rm:rm1', 'rm:rm1', 'labeled', 'succeeded', 1) RETURNING id"
        ).fetchone()[0]
    record_vote(studio.db, person, Vote(a, b, "a"))
    item = judging.pairs_to_judge(studio.db, judging.LABELED, judges.parse_judge("rm1"))[0]
    judging.save_verdict(
        studio.db, run_id, ensure_ai_labeler(studio.db, "ai:rm:rm1"), item, judges.combine(0.1, 0.9), 0
    )


@pytest.mark.slow  # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_every_console_page_and_section_as_each_role(tmp_path, tiny_model_dir, monkeypatch):
    """Each console page run as a labeler and as an admin: refused exactly where its rule says none, and each
    section's content present or absent as its rule says; other people's text never reaches a labeler."""
    from streamlit.testing.v1 import AppTest

    import app.auth
    import core.studio
    from core.labeling.feedback import Feedback, record_feedback
    from core.labeling.identity import ensure_user
    from tests.support.studios import data_page

    monkeypatch.setattr(core.studio, "_current", None)
    studio = core.studio.open_studio(
        load_settings({"data_dir": str(tmp_path / "data"), "model": "tiny"}, env={}), tiny_model_dir
    )
    users = {
        "labeler": ensure_user(studio.db, "bob", "labeler", "file"),
        "admin": ensure_user(studio.db, "ada", "admin", "file"),
    }
    cat = ensure_user(studio.db, "cat", "labeler", "file")
    record_feedback(
        studio.db, Feedback(prompt="cat's secret prompt", response="cat's secret answer", score=1.0), cat.id
    )
    record_feedback(
        studio.db, Feedback(prompt="bob's own prompt", response="bob's answer", score=0.0), users["labeler"].id
    )
    seed_judge_disagreement(studio, cat)
    checked = set()
    try:
        for page in console_pages():
            for role, user in users.items():
                monkeypatch.setattr(app.auth, "credentials_user", lambda *_args, user=user: user)
                run = AppTest.from_file(str(PAGES / f"{page}.py"), default_timeout=120).run()
                assert not run.exception, (page, role, run.exception)
                text = _page_text(run)
                for tab in [t.label for t in run.tabs][1:] if page == "data" else []:  # lazy tabs: each one run
                    run = data_page(tab, timeout=120)
                    assert not run.exception, (page, tab, role, run.exception)
                    text += "\n" + _page_text(run)
                refused = "This page is for admins" in text
                assert refused == (access.scope(user, f"page:{page}") == access.NONE), (page, role)
                if refused:
                    continue
                assert "cat's secret" not in text or role == "admin", (page, role)
                for section, (marker, own_marker) in SECTION_MARKERS.items():
                    if not section.startswith(page + "."):
                        continue
                    granted = access.scope(user, section)
                    checked.add(section)
                    if own_marker is not None and granted in (access.OWN, access.SUMMARY):
                        assert own_marker in text, (section, role, own_marker)
                    elif own_marker is not None and granted == access.ALL:
                        assert marker in text and own_marker not in text, (section, role)
                    else:
                        assert (marker in text) == (granted != access.NONE), (section, role, marker)
    finally:
        studio.close()
    assert checked == set(SECTION_MARKERS)
