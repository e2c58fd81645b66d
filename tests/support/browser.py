"""A person in a real browser: Debian's Chromium driven by Playwright (no browser download), and the labeling
app's chat-and-vote steps the browser tests share."""
from __future__ import annotations

import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.support import ARTIFACTS

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# no sandbox (containers run as root); no GPU, background traffic, updates or first-run screens: nothing
# the tests do not ask for
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1400, "height": 1000}


@contextmanager
def chromium_browser() -> Iterator[Any]:
    """Headless Chromium for the duration of the block (a Playwright Browser); fails the test if it is missing."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def browser_page() -> Iterator[Any]:
    """One page (a Playwright Page) in a fresh headless Chromium."""
    with chromium_browser() as browser:
        yield browser.new_page(viewport=VIEWPORT)


@dataclass
class PageChecker:
    """Screenshots each step as test-artifacts/newcomer-NN-<name>.png and fails on a Python traceback."""

    page: Any
    count: int = 0
    shots: list[Path] = field(default_factory=list)

    def failure_path(self) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        return ARTIFACTS / f"newcomer-{self.count + 1:02d}-FAILED.png"

    def check(self, name: str) -> Path:
        self.count += 1
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"newcomer-{self.count:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.shots.append(path)
        content = self.page.content()
        assert "Traceback" not in content, f"{name}: the page shows a traceback ({path})"
        assert self.page.locator("[data-testid='stException']").count() == 0, f"{name}: Streamlit exception ({path})"
        return path


def status_text(page: Any) -> str:
    return page.locator("#save-status").inner_text()


def chat_and_vote(page: Any, prompt: str, key: str, vote_number: int) -> None:
    """Send a message, wait for the two candidates, vote with the keyboard and wait for the receipt."""
    page.get_by_placeholder("Write a message").fill(prompt)
    page.get_by_role("button", name="Send", exact=True).click()
    page.wait_for_function("() => document.querySelector('#save-status')?.innerText.includes('Pick the better')",
                           timeout=120_000)
    assert page.locator("#cand-a").inner_text().strip() and page.locator("#cand-b").inner_text().strip()
    page.locator("body").click(position={"x": 5, "y": 5})   # focus outside the text box: keys vote
    page.keyboard.press(key)
    page.wait_for_function("() => document.querySelector('#save-status')?.innerText.includes('Saved')",
                           timeout=30_000)
    assert f"vote #{vote_number})" in status_text(page)   # a fresh studio: votes are numbered from 1


def set_max_new_tokens(page: Any, accordion: str, value: int = 8) -> None:
    """Short answers keep the tiny model quick: the Sampling settings accordion's number box, checked on the
    slider (the value counts once the slider shows it)."""
    page.get_by_text(accordion, exact=True).click()
    number = page.locator("input[aria-label='number input for Max new tokens']:visible")
    slider = page.locator("input[aria-label='range slider for Max new tokens']:visible")
    for _ in range(20):
        number.fill(str(value))
        number.press("Tab")
        time.sleep(0.25)
        if slider.input_value() == str(value) and number.input_value() == str(value):
            return
    raise AssertionError(f"Max new tokens stayed {number.input_value()} / slider {slider.input_value()}")
