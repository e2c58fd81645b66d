"""Console access as a person meets it (Streamlit's AppTest on the real console and pages, a real studio): a
labeler who opens an admin page by its address is told it is for admins, and the Account page says who is signed
in, with which role, and how to sign out for the way they signed in."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from app import access
from core.config import load_settings
from core.labeling.identity import ensure_user
from tests.support import ROOT
from tests.support.studios import users_file

PAGES = ROOT / "pages"
ADMIN_PAGES = ("train", "export", "compare", "labeling")


def _text(app) -> str:
    """What a viewer reads on an AppTest page: titles, text, notices and buttons."""
    parts = [
        str(e.value)
        for kind in ("title", "markdown", "caption", "info", "warning", "success", "error")
        for e in getattr(app, kind)
    ]
    return "\n".join(parts + [str(b.label) for b in app.button])


@pytest.fixture
def team_studio(tmp_path, tiny_model_dir, monkeypatch) -> Iterator:
    """A team-mode studio with an admin and a labeler, current for the console's pages."""
    import core.studio

    monkeypatch.setattr(core.studio, "_current", None)
    users = users_file(tmp_path / "users.txt", "ada:ada-secret-1:admin", "bob:bob-secret-1:labeler")
    settings = load_settings(
        {"data_dir": str(tmp_path / "data"), "model": "tiny", "auth_mode": "team", "users_file": str(users)}, env={}
    )
    studio = core.studio.open_studio(settings, tiny_model_dir)
    yield studio
    studio.close()


def _as(monkeypatch, user, authorization: str = "") -> None:
    """Run the console's pages as ``user``, who sent ``authorization`` (AppTest cannot send headers)."""
    import app.auth
    import pages.common

    monkeypatch.setattr(app.auth, "credentials_user", lambda *_args: user)
    monkeypatch.setattr(pages.common, "authorization_header", lambda: authorization)


def test_a_labeler_opening_an_admin_page_by_its_address_is_told_it_is_for_admins(team_studio, monkeypatch):
    from streamlit.testing.v1 import AppTest

    bob = ensure_user(team_studio.db, "bob", "labeler", "file")
    ada = ensure_user(team_studio.db, "ada", "admin", "file")
    _as(monkeypatch, bob, "Basic " + base64.b64encode(b"bob:bob-secret-1").decode())
    console = AppTest.from_file(str(PAGES / "console.py"), default_timeout=120).run()
    assert not console.exception, console.exception
    for page in ADMIN_PAGES:
        assert access.scope(bob, f"page:{page}") == access.NONE  # the rule table is unchanged
        opened = console.switch_page(f"{page}.py").run()
        assert not opened.exception, (page, opened.exception)
        refusal = [e.value for e in opened.error]
        assert any("This page is for admins" in text and "bob (labeler)" in text for text in refusal), (page, refusal)
        assert "Recent items" not in _text(opened)  # not the Data page instead
        assert not [b for b in opened.button if b.label in ("Dry run", "Launch")]
    opened = console.switch_page("runs.py").run()  # a page labelers have: no refusal
    assert not opened.exception and not [e for e in opened.error if "for admins" in str(e.value)]

    _as(monkeypatch, ada, "Basic " + base64.b64encode(b"ada:ada-secret-1").decode())
    admin = AppTest.from_file(str(PAGES / "console.py"), default_timeout=120).run()
    train = admin.switch_page("train.py").run()
    assert not train.exception and "This page is for admins" not in _text(train)
    assert [b for b in train.button if b.label == "Dry run"]


def _link_buttons(app) -> list[tuple[str, str]]:
    """(label, url) of each st.link_button on the page."""
    return [(e.proto.label, e.proto.url) for e in app.get("link_button")]


def test_the_account_page_says_who_is_signed_in_and_how_to_sign_out(team_studio, monkeypatch):
    from streamlit.testing.v1 import AppTest

    bob = ensure_user(team_studio.db, "bob", "labeler", "file")
    _as(monkeypatch, bob, "Basic " + base64.b64encode(b"bob:bob-secret-1").decode())
    page = AppTest.from_file(str(PAGES / "account.py"), default_timeout=120).run()
    assert not page.exception, page.exception
    text = _text(page)
    assert "Signed in as **bob**, role **labeler**" in text
    assert "HTTP Basic" in text and "close every window of this browser" in text and "private window" in text
    assert "[sign out of the labeling app](/label/logout)" in text  # the labeling app's own login ends there
    assert _link_buttons(page) == []  # no button that would not sign out

    carol = ensure_user(team_studio.db, "carol", "admin", "oauth")  # a Hugging Face sign-in (its cookie)
    _as(monkeypatch, carol)
    page = AppTest.from_file(str(PAGES / "account.py"), default_timeout=120).run()
    assert not page.exception, page.exception
    assert "Signed in as **carol**, role **admin**" in _text(page) and "Hugging Face" in _text(page)
    assert _link_buttons(page) == [("Sign out", "/logout")]


def test_in_local_mode_the_account_page_says_there_is_nothing_to_sign_out_of(tmp_path, tiny_model_dir, monkeypatch):
    from streamlit.testing.v1 import AppTest

    import core.studio

    monkeypatch.setattr(core.studio, "_current", None)
    studio = core.studio.open_studio(
        load_settings({"data_dir": str(tmp_path / "data"), "model": "tiny"}, env={}), tiny_model_dir
    )
    try:
        page = AppTest.from_file(str(PAGES / "account.py"), default_timeout=120).run()
        assert not page.exception, page.exception
        text = _text(page)
        assert "Signed in as **local**, role **admin**" in text and "nothing to sign out of" in text
        assert _link_buttons(page) == []
    finally:
        studio.close()
