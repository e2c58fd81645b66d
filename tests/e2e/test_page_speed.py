"""Console page speed (issue 28, part 9): with 10,000 votes and five versions on the default model, every console
page settles within PAGE_LIMIT_S after a click in its sidebar, as an admin, in a real browser.

Before the fix the Data page took 13-23 s with these data (the label signature over 17k answers, a 6 s exact
binomial tail, and every analytic recomputed on each rerun under a 5 s cache) and the Wallet page waited behind
the chain worker's backlog. Now the pages cache what they compute from the labels on the labels' fingerprint
(core.labeling.analytics.labels_fingerprint), so a rerun of an unchanged studio recomputes nothing.

Each page is opened twice, one round through the sidebar after the other, and the better time counts: the first
opening of a page in a fresh server compiles its script, imports what it needs and fills the caches, which a
person pays once per server start, not per visit. Both times and each page's full load (its address typed into a
fresh tab) are printed and saved to test-artifacts/page-speed.json. "Settled" is what the walkthrough waits for
(tests/support/browser.console_settled): the script finished and the page shows its content.

A new vote changes the fingerprint, so the next visit of the Data and Train pages recomputes their analytics: after
the two rounds, a vote is sent through the REST API (as a labeler's would arrive) before each of those visits, and
the first visit after it is timed, twice over, the better time held to PAGE_LIMIT_S too. The Data page's tabs run
lazily, each computing only its own part: the overview (metrics, the guided loop, activity), what the labels
prefer, agreement and items are each timed after a new vote. With every section computed at once, the Data page
took 2.4 s in-process after a new vote on 12-06, 0.6-0.7 s after the reads were trimmed and overlapped, and still
1.1-1.6 s in the browser (the browser drew every section's charts); opened on its overview it takes ~0.65 s."""

from __future__ import annotations

import json
import os
import shutil
import time

import httpx
import pytest

from bench.harness.processes import free_port
from tests.support import ARTIFACTS
from tests.support.browser import VIEWPORT, console_rerun, console_settled
from tests.support.servers import Server

pytestmark = [pytest.mark.slow, pytest.mark.alone]
PAGE_LIMIT_S = 1.5
VOTES, VERSIONS = 10_000, 5


@pytest.fixture(scope="module")
def busy_studio(tmp_path_factory):
    """A studio on the default model (converted once into a cache, hard-linked into the data dir) with VOTES votes
    of eight people and VERSIONS trained versions, written through core's own functions before the server starts."""
    from bench.harness.versions import random_versions
    from core.chain.contributions import collect_contributions
    from core.serving.models import DEFAULT_MODEL_DIR, MODELS_SUBDIR, provision_default_model
    from storage.db import Database
    from tests.support.studios import seed_votes

    cached = provision_default_model(tmp_path_factory.mktemp("default-model"), progress=False)
    data_dir = tmp_path_factory.mktemp("busy") / "data"
    model_dir = data_dir / MODELS_SUBDIR / DEFAULT_MODEL_DIR
    model_dir.parent.mkdir(parents=True)
    shutil.copytree(cached, model_dir, copy_function=os.link)
    db = Database.in_data_dir(data_dir)
    seed_votes(db, VOTES)
    random_versions(db, data_dir / "runs", "default", model_dir, VERSIONS)
    collect_contributions(db)  # recorded as the votes came in; else the chain worker's backlog loads the CPU
    db.close()
    srv = Server(data_dir, free_port()).start(timeout=300)
    yield srv
    srv.stop()


def test_every_console_page_settles_within_the_limit_with_10k_votes(busy_studio, chromium):
    context = chromium.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.goto(busy_studio.url + "/")
    console_settled(page)
    nav = page.locator("[data-testid='stSidebarNav'] a")
    links = {
        nav.nth(i).inner_text().strip().splitlines()[-1]: nav.nth(i).get_attribute("href") for i in range(nav.count())
    }
    assert {"Data", "Train", "Runs", "Compare", "Wallet", "Settings"} <= set(links), links
    clicks: dict[str, list[float]] = {title: [] for title in links}
    order = list(range(1, len(links))) + [0]  # the first page is open: clicking its own link runs nothing
    for _ in range(2):
        for i in order:
            title = list(links)[i]
            started = time.monotonic()
            console_rerun(page, lambda i=i: nav.nth(i).click())
            clicks[title].append(time.monotonic() - started)
            print(f"{title}: {clicks[title][-1]:.2f} s", flush=True)  # on a failure: how far the walk got
            assert page.locator("[data-testid='stException']").count() == 0, f"{title}: the page shows an exception"
    # the first visits after a new vote: caches miss. The Data page opens on its overview; each of its other tabs
    # (they run lazily) computes its own part when opened, so each is timed after a new vote too
    data_tabs = [f"Data › {name}" for name in ("What the labels prefer", "Agreement", "Items")]
    fresh: dict[str, list[float]] = {"Data": [], "Train": [], **{name: [] for name in data_tabs}}
    away = next(i for i, title in enumerate(links) if title not in fresh)
    for round_ in range(2):
        for target in ("Data", *data_tabs, "Train"):
            console_rerun(page, lambda: nav.nth(away).click())
            reply = httpx.post(
                busy_studio.url + "/api/votes",
                timeout=10,
                json={
                    "prompt": f"Is the page fast after new vote {round_ + 1} ({target})?",
                    "answer_a": "Yes, within the limit.",
                    "answer_b": "No.",
                    "outcome": "a",
                },
            )
            assert reply.status_code == 201, reply.text
            title, _, tab = target.partition(" › ")
            if tab:  # the Data page as it was (its overview computed), then the tab, after the vote
                console_rerun(page, lambda title=title: nav.nth(list(links).index(title)).click())
            started = time.monotonic()
            console_rerun(
                page,
                (lambda tab=tab: page.get_by_role("tab", name=tab, exact=True).click())
                if tab
                else (lambda title=title: nav.nth(list(links).index(title)).click()),
            )
            fresh[target].append(time.monotonic() - started)
            print(f"{target} after a new vote: {fresh[target][-1]:.2f} s", flush=True)
            assert page.locator("[data-testid='stException']").count() == 0, f"{target}: the page shows an exception"
            if target == "Data" and round_ == 0:
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "page-speed-data.png"), full_page=True)
    loads = {}
    for title, href in links.items():  # the address typed into a fresh tab: connection, script, first paint
        tab = context.new_page()
        started = time.monotonic()
        tab.goto(href if href.startswith("http") else busy_studio.url + href)
        console_settled(tab)
        loads[title] = time.monotonic() - started
        tab.close()
    context.close()

    best = {title: min(times) for title, times in clicks.items()}
    print(
        f"\nconsole pages with {VOTES} votes and {VERSIONS} versions on the default model "
        f"({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}):"
    )
    for title, times in clicks.items():
        print(
            f"  {title:16s} click {' / '.join(f'{t:.2f}' for t in times)} s (best {best[title]:.2f} s), "
            f"full load {loads[title]:.2f} s"
            f"{f', after a new vote {min(fresh[title]):.2f} s' if title in fresh else ''}"
        )
    for target in data_tabs:
        print(f"  {target:16s} after a new vote {' / '.join(f'{t:.2f}' for t in fresh[target])} s")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "page-speed.json").write_text(
        json.dumps(
            {
                "votes": VOTES,
                "versions": VERSIONS,
                "model": "default",
                "cpus": os.cpu_count(),
                "load_average": os.getloadavg()[0],
                "limit_s": PAGE_LIMIT_S,
                "pages": {
                    title: {
                        "click_s": [round(t, 3) for t in clicks[title]],
                        "best_s": round(best[title], 3),
                        "full_load_s": round(loads[title], 3),
                        **({"after_new_vote_s": [round(t, 3) for t in fresh[title]]} if title in fresh else {}),
                    }
                    for title in clicks
                },
                "data_tabs_after_new_vote_s": {target: [round(t, 3) for t in fresh[target]] for target in data_tabs},
            },
            indent=2,
        )
        + "\n"
    )
    slow = {title: round(seconds, 2) for title, seconds in best.items() if seconds > PAGE_LIMIT_S}
    slow |= {
        f"{title} after a new vote": round(min(times), 2) for title, times in fresh.items() if min(times) > PAGE_LIMIT_S
    }
    assert not slow, f"pages slower than {PAGE_LIMIT_S} s: {slow}"
