"""Offline and private by default (issue 28, parts 3 and 4): a served studio, opened in a real browser, asks nothing
of any other host (no usage statistics, no font or icon host), and the labeling app draws all of its own text with
the fonts it serves itself, so nothing falls back to whatever the viewer's machine has (emoji as boxes, a bold "A"
in another font). One session checks both: a server start is most of the time."""

from __future__ import annotations

import pytest

from tests.support import ARTIFACTS
from tests.support.browser import (
    VIEWPORT,
    SiteWatch,
    chat_and_vote,
    console_settled,
    rendering_fonts,
    set_max_new_tokens,
    system_fonts_in_label_app,
)
from tests.support.servers import Server


@pytest.mark.slow
def test_a_session_requests_nothing_outside_the_studio_and_draws_its_text_in_the_fonts_it_serves(
    server: Server, chromium
):
    context = chromium.new_context(viewport=VIEWPORT)
    watch = SiteWatch(server.url).attach(context)
    page = context.new_page()
    for path in ("/", "/settings"):
        page.goto(server.url + path)
        console_settled(page)
    page.wait_for_timeout(1000)  # the page icon and anything the console fetches after its first render

    page.goto(server.url + "/label/")
    page.wait_for_selector("#whoami:has-text('Local mode, no login')", timeout=60_000)
    set_max_new_tokens(page, "Sampling settings")
    chat_and_vote(page, "Hello there", "1", 1)  # the receipt ("✓ Saved: ...") is on screen now
    page.get_by_text("Ratings, thumbs, flags, note and gold edit").click()  # the thumbs' words
    page.wait_for_selector("text=Thumbs · A", timeout=10_000)
    assert rendering_fonts(page, ".gradio-container *")  # the check sees the page's text at all
    assert system_fonts_in_label_app(page) == {}
    for tab in ("Arena", "Review"):
        page.get_by_role("tab", name=tab).click()
        page.wait_for_timeout(500)
        assert system_fonts_in_label_app(page) == {}, tab
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "offline-label.png"), full_page=True)
    context.close()
    watch.assert_clean()
