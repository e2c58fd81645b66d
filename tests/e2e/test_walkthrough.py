"""The newcomer's walk (issue 28, "done when"): every console page and every labeling-app tab, as an admin and as a
labeler of a team, in a real browser, the way a person clicks through them. It fails on any browser console error,
any request outside the studio's origin, any traceback or warning in the server's log, and any text of the console
or the labeling app drawn with a font the studio does not serve (a box, or another font, on some machines).
Screenshots: test-artifacts/walk-<role>-NN-<step>.png; the seconds each console page took to settle are printed.

The labeler also uses the labeling app's keyboard shortcuts (1-4 vote, u undo, n next) in each tab, is told
"This page is for admins" on the admin pages typed in the address bar, and signs out. One server for the whole walk:
its start is a fifth of the time."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.support import ARTIFACTS
from tests.support.browser import (
    CONSOLE_TEXT,
    VIEWPORT,
    SiteWatch,
    chat_and_vote,
    console_rerun,
    console_settled,
    console_tab,
    gradio_login,
    set_max_new_tokens,
    system_fonts,
    system_fonts_in_label_app,
)
from tests.support.servers import Server, team_server

ADA, BOB = ("ada", "pw-ada"), ("bob", "pw-bob")
ADMIN_PAGES = ("train", "export", "compare", "labeling")  # what a labeler may type in the address bar
LABEL_TABS = ("Chat & label", "Arena", "Review")
# A line of the server's log that a person would have to read: tracebacks, warnings (Python's, deprecations,
# logging's WARNING/ERROR). The log of a healthy session is the start-up line and nothing else.
TROUBLE = re.compile(r"traceback|warning|deprecat|\berror\b|exception", re.IGNORECASE)


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """A team studio (an admin and a labeler) with one trained version, so the Arena and the blind check have two
    versions to pit against each other."""
    srv = team_server(tmp_path_factory.mktemp("walk"), "ada:pw-ada:admin", "bob:pw-bob:labeler")
    yield srv
    srv.stop()


@dataclass
class Walk:
    """One person's walk: a browser context logged in to the console, its site watch, numbered screenshots."""

    server: Server
    role: str
    page: Any
    watch: SiteWatch
    count: int = 0
    timings: list[tuple[str, float]] = field(default_factory=list)

    def shot(self, step: str) -> None:
        self.count += 1
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"walk-{self.role}-{self.count:02d}-{step}.png"), full_page=True)
        assert "Traceback" not in self.page.content(), f"{self.role} {step}: the page shows a traceback"
        assert self.page.locator("[data-testid='stException']").count() == 0, f"{self.role} {step}: exception"

    def console_page(self, step: str, open_it) -> None:
        started = time.monotonic()
        open_it()
        console_settled(self.page)
        self.timings.append((step, time.monotonic() - started))
        self.shot(step)
        assert system_fonts(self.page, CONSOLE_TEXT) == {}, f"{self.role} {step}: text in system fonts"

    def label_tab(self, tab: str) -> None:
        self.page.get_by_role("tab", name=tab).click()
        self.page.wait_for_timeout(300)
        assert system_fonts_in_label_app(self.page) == {}, f"{self.role} {tab}: text in system fonts"


def walk_console(walk: Walk) -> list[str]:
    """Open the console and each tab of its first page (Data), then every page its sidebar lists, by clicking (as a
    person does); the titles seen."""
    page = walk.page
    walk.console_page("console", lambda: page.goto(walk.server.url + "/"))
    tabs = page.locator("[data-testid='stTabs'] [role='tab']")  # the Data page's: they run lazily, one by one
    for name in [tabs.nth(i).inner_text().strip() for i in range(tabs.count())][1:]:
        walk.console_page("data-" + re.sub(r"\W+", "-", name.lower()), lambda name=name: console_tab(page, name))
    nav = page.locator("[data-testid='stSidebarNav'] a")
    titles = [nav.nth(i).inner_text().strip().splitlines()[-1] for i in range(nav.count())]  # after the icon
    assert titles, "the sidebar lists no page"
    for i, title in enumerate(titles[1:], 1):  # the first is the page already open
        walk.console_page(
            re.sub(r"\W+", "-", title.lower()), lambda i=i: console_rerun(page, lambda: nav.nth(i).click())
        )
    return titles


def check_log(server: Server) -> None:
    lines = server.log_path.read_text(errors="replace").splitlines()
    trouble = [line for line in lines if TROUBLE.search(line)]
    assert not trouble, "the server logged:\n" + "\n".join(trouble[:40])


@pytest.mark.slow
def test_every_page_and_tab_as_admin_and_as_labeler(team, chromium):
    started = time.monotonic()
    for old in ARTIFACTS.glob("walk-*.png"):  # the artefacts show this run only
        old.unlink()
    walks = {}
    for role, credentials in (("admin", ADA), ("labeler", BOB)):
        context = chromium.new_context(
            viewport=VIEWPORT, http_credentials={"username": credentials[0], "password": credentials[1]}
        )
        watch = SiteWatch(team.url).attach(context)
        walk = walks[role] = Walk(team, role, context.new_page(), watch)
        titles = walk_console(walk)
        if role == "admin":
            assert {"Data", "Train", "Runs", "Compare", "Export", "Settings", "Account"} <= set(titles), titles
            walk_label_app_as_admin(walk)
        else:
            assert "Train" not in titles and "Export" not in titles, titles
            for path in ADMIN_PAGES:  # typed in the address bar: told so, not sent elsewhere
                # console_page calls the lambda at once, in this iteration
                walk.console_page(f"typed-{path}", lambda path=path: walk.page.goto(f"{team.url}/{path}"))  # noqa: B023
                assert walk.page.get_by_text("This page is for admins").count() == 1, path
            walk_label_app_as_labeler(walk)
        context.close()
        watch.assert_clean()
    check_log(team)
    for role, walk in walks.items():
        print(role, " ".join(f"{step}={seconds:.1f}s" for step, seconds in walk.timings))
    print(f"walk: {time.monotonic() - started:.0f} s")


def walk_label_app_as_admin(walk: Walk) -> None:
    page = walk.page
    gradio_login(page, walk.server.url + "/label/", ADA)
    page.wait_for_selector("#whoami:has-text('Signed in as ada (admin)')", timeout=30_000)
    for tab in LABEL_TABS:
        walk.label_tab(tab)
        walk.shot("label-" + tab.split()[0].lower())


def walk_label_app_as_labeler(walk: Walk) -> None:
    """Chat and vote, undo and vote again; leave one pair for an AI judge; a blind-check pair in the Arena and that
    pair in Review, each with its keys; then sign out."""
    page, url = walk.page, walk.server.url
    gradio_login(page, url + "/label/", BOB)
    page.wait_for_selector("#whoami:has-text('Signed in as bob (labeler)')", timeout=30_000)
    walk.label_tab("Chat & label")
    set_max_new_tokens(page, "Sampling settings")
    chat_and_vote(page, "Hello, who are you?", "1", 1)
    page.keyboard.press("u")
    page.wait_for_function("() => document.querySelector('#save-status')?.innerText.includes('undone')", timeout=30_000)
    page.keyboard.press("2")
    page.wait_for_function(
        "() => document.querySelector('#save-status')?.innerText.includes('vote #2')", timeout=30_000
    )
    page.get_by_placeholder("Write a message").fill("Which is larger, 3 or 7?")  # a pair nobody votes on
    page.get_by_role("button", name="Send", exact=True).click()
    page.wait_for_function(
        "() => document.querySelector('#save-status')?.innerText.includes('Pick the better')", timeout=120_000
    )
    walk.label_tab("Chat & label")
    walk.shot("label-chat")
    judge_the_unvoted_pairs(url)

    walk.label_tab("Arena")
    set_max_new_tokens(page, "Sampling settings (the same for both versions)")
    page.wait_for_selector("#blind-check-start", timeout=30_000)
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("n")
    page.wait_for_function(
        "() => document.querySelector('#arena-status')?.innerText.includes('Which answer')", timeout=120_000
    )
    page.keyboard.press("1")
    page.wait_for_function(
        "() => document.querySelector('#arena-reveal')?.innerText.includes('Revealed')", timeout=30_000
    )
    assert "Saved" in page.locator("#arena-status").inner_text()
    walk.label_tab("Arena")
    walk.shot("label-arena")

    walk.label_tab("Review")
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("n")
    page.wait_for_function(
        "() => document.querySelector('#review-status')?.innerText.includes('Which answer')", timeout=30_000
    )
    page.keyboard.press("4")
    page.wait_for_function(
        "() => document.querySelector('#review-status')?.innerText.includes('Saved')", timeout=30_000
    )
    assert "said" in page.locator("#review-verdict").inner_text()
    walk.label_tab("Review")
    walk.shot("label-review")

    page.get_by_role("link", name="Sign out").click()
    page.get_by_label("username").wait_for(timeout=30_000)  # the login page again
    walk.shot("signed-out")
    page.goto(url + "/label/")
    page.get_by_label("username").wait_for(timeout=30_000)  # and it stays signed out


def judge_the_unvoted_pairs(url: str) -> None:
    """An admin's AI judge run (the policy as judge) over the pairs nobody voted on: the Review tab's material."""
    with httpx.Client(base_url=url, auth=ADA, timeout=60) as api:
        run = api.post("/api/judge-runs", json={"judge": "policy", "source": "unlabeled"})
        assert run.status_code == 202, run.text
        deadline = time.monotonic() + 120
        while (state := api.get(f"/api/judge-runs/{run.json()['id']}").json())["status"] == "running":
            assert time.monotonic() < deadline, state
            time.sleep(0.3)
    assert state["status"] == "succeeded" and state["done"] >= 1, state
