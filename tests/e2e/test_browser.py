"""A person in a real browser (headless Chromium): chat, vote with the keyboard, see "saved"."""

from __future__ import annotations

import pytest

from storage.db import Database
from tests.support import ARTIFACTS
from tests.support.browser import console_tab
from tests.support.servers import Server

pytestmark = pytest.mark.slow


def test_labeler_chats_votes_with_the_keyboard_and_sees_saved(server: Server, page):
    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(server.url + "/label/")
    page.get_by_placeholder("Write a message").fill("What is the capital of France?")
    page.get_by_role("button", name="Send", exact=True).click()
    page.wait_for_selector("text=Pick the better answer", timeout=120_000)
    assert page.locator("#cand-a").inner_text().strip() and page.locator("#cand-b").inner_text().strip()
    page.locator("body").click(position={"x": 5, "y": 5})  # focus outside the text box
    page.keyboard.press("1")
    page.wait_for_selector("text=Saved", timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "label-voted.png"), full_page=True)
    assert "A is better" in page.locator("#save-status").inner_text()
    assert "Traceback" not in page.content()
    page.goto(server.url + "/")
    console_tab(page, "Items")
    page.wait_for_selector("text=Recent items", timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "console-data.png"), full_page=True)
    assert "Traceback" not in page.content()
    server.stop()
    db = Database.in_data_dir(server.data_dir)
    assert db.query("SELECT outcome, source FROM preferences") == [{"outcome": "a", "source": "chat"}]
    db.close()
