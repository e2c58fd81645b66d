"""A person in a real browser: Debian's Chromium driven by Playwright (no browser download), and the labeling
app's chat-and-vote steps the browser tests share."""

from __future__ import annotations

import re
import shutil
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import ARTIFACTS

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# no sandbox (containers run as root); no GPU, background traffic, updates or first-run screens: nothing
# the tests do not ask for
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1400, "height": 1000}


@contextmanager
def chromium_browser() -> Iterator[Any]:
    """Headless Chromium for the duration of the block (a Playwright Browser); fails the test if it is missing."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = watch_pages(p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS))
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
    page.wait_for_function(
        "() => document.querySelector('#save-status')?.innerText.includes('Pick the better')", timeout=120_000
    )
    assert page.locator("#cand-a").inner_text().strip() and page.locator("#cand-b").inner_text().strip()
    page.locator("body").click(position={"x": 5, "y": 5})  # focus outside the text box: keys vote
    page.keyboard.press(key)
    page.wait_for_function("() => document.querySelector('#save-status')?.innerText.includes('Saved')", timeout=30_000)
    assert f"vote #{vote_number})" in status_text(page)  # a fresh studio: votes are numbered from 1


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


STREAMLIT_PROBE = re.compile(r"^/[^/?#]+/_stcore/(health|host-config)$")


@dataclass
class SiteWatch:
    """What a browser context did beyond the studio: every request (pages, workers, websockets) whose URL is not
    on the studio's origin, every console error, every uncaught page error and every answer of 400 or more (the
    console's "Failed to load resource" names no URL). A self-hosted studio must send
    nothing anywhere (no usage statistics, no font or icon host) and log no error in the browser.

    ``data:`` and ``blob:`` URLs never leave the browser, so they count as the studio's own."""

    origin: str
    outside: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def own(self, url: str) -> bool:
        ws_origin = "ws" + self.origin.removeprefix("http")
        return url.startswith(("data:", "blob:", "about:blank")) or any(
            url == o or url.startswith(o + "/") for o in (self.origin, ws_origin)
        )

    def attach(self, context: Any) -> SiteWatch:
        """Watch ``context`` (a Playwright BrowserContext) and every page opened in it from now on."""
        context.on("request", lambda request: self._url(request.url))
        context.on("response", self._response)
        context.on("page", self._page)
        for page in context.pages:
            self._page(page)
        return self

    def _url(self, url: str) -> None:
        if not self.own(url):
            self.outside.append(url)

    def streamlit_probe(self, url: str) -> bool:
        """Streamlit's own base-URL discovery: opened on a page's URL (``/settings``), its frontend first asks
        whether the whole app lives under that path (``/settings/_stcore/health``, ``.../host-config``), and a 404
        is the answer that sends it to ``/_stcore/...``. Only that exact request may answer 404."""
        return bool(STREAMLIT_PROBE.match(url.removeprefix(self.origin)))

    def _response(self, response: Any) -> None:
        if response.status >= 400 and not (response.status == 404 and self.streamlit_probe(response.url)):
            self.errors.append(f"HTTP {response.status} for {response.request.method} {response.url}")

    def _console(self, page: Any, message: Any) -> None:
        if message.type != "error":
            return
        if message.text.startswith("Failed to load resource") and self.streamlit_probe(message.location["url"]):
            return  # the browser's own line for the probe's 404 (see streamlit_probe)
        self.errors.append(f"{page.url}: console {message.type}: {message.text} (at {message.location['url']})")

    def _page(self, page: Any) -> None:
        page.on("websocket", lambda ws: self._url(ws.url))
        page.on("console", lambda message: self._console(page, message))
        page.on("pageerror", lambda exc: self.errors.append(f"{page.url}: uncaught {exc}"))

    def assert_clean(self) -> None:
        assert not self.outside, f"requests outside {self.origin}: {sorted(set(self.outside))}"
        assert not self.errors, "browser console errors:\n" + "\n".join(self.errors)


SETTLED = """() => {
  const app = document.querySelector("[data-testid='stApp']");
  return app && app.dataset.testScriptState === 'notRunning' && app.dataset.testConnectionState === 'CONNECTED'
    && document.querySelector("[data-testid='stMain'] [data-testid='stElementContainer']");
}"""


def console_settled(page: Any, timeout: float = 60_000) -> None:
    """Wait until the Streamlit console is connected, its script has finished and the page shows something.

    Streamlit marks its root with data-test-script-state ('running' while the page's script runs) and
    data-test-connection-state; "settled" means both are quiet and the main area has an element."""
    page.wait_for_function(SETTLED, timeout=timeout)


class ScriptRuns:
    """The full script runs a page's Streamlit console finished, counted from its WebSocket (Streamlit's
    ``script_finished`` message). The DOM cannot tell: a run that starts and ends within one frame never marks the
    app 'running' (React renders the two states at once), and a lazy tab's rerun is often that fast."""

    FULL_RUN = (0, 1)  # FINISHED_SUCCESSFULLY, FINISHED_WITH_COMPILE_ERROR; not a fragment's or an interrupted run

    def __init__(self, page: Any) -> None:
        self.finished = 0
        page.on("websocket", lambda ws: ws.on("framereceived", self._frame))

    def _frame(self, payload: Any) -> None:
        if isinstance(payload, str) or len(payload) > 2048:  # script_finished is a small binary message
            return
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        message = ForwardMsg()
        try:
            message.ParseFromString(payload)
        except Exception:  # noqa: BLE001 - not a ForwardMsg (the labeling app's socket, say): not ours to count
            return
        if message.WhichOneof("type") == "script_finished" and message.script_finished in self.FULL_RUN:
            self.finished += 1


_RUNS: weakref.WeakKeyDictionary[Any, ScriptRuns] = weakref.WeakKeyDictionary()


def watch_pages(browser: Any) -> Any:
    """Count every console page's script runs (:class:`ScriptRuns`) for pages ``browser`` opens from now on, directly
    or through its contexts: the counting must start before the page opens its WebSocket."""

    def watch(page: Any) -> None:
        _RUNS.setdefault(page, ScriptRuns(page))

    def new_context(*args: Any, **kwargs: Any) -> Any:
        context = make_context(*args, **kwargs)
        context.on("page", watch)
        return context

    def new_page(*args: Any, **kwargs: Any) -> Any:
        page = make_page(*args, **kwargs)
        watch(page)
        return page

    make_context, make_page = browser.new_context, browser.new_page
    browser.new_context, browser.new_page = new_context, new_page
    return browser


def console_rerun(page: Any, action: Any, timeout: float = 60_000) -> None:
    """Do ``action`` (a click in an open console: a sidebar link, a tab, a button) and wait until the script run it
    starts has finished and the page shows it. Without watching for the run itself, the previous page's finished
    state passes for settled before the new run has even begun."""
    runs = _RUNS.get(page)
    if runs is None:
        raise RuntimeError("console_rerun needs a page opened from chromium_browser() (its runs are counted)")
    before, deadline = runs.finished, time.monotonic() + timeout / 1000
    action()
    while runs.finished == before:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no script run finished within {timeout / 1000:.0f} s of the action")
        page.wait_for_timeout(10)  # Playwright delivers the WebSocket's frames while it waits
    page.wait_for_function(SETTLED, timeout=max(1.0, (deadline - time.monotonic()) * 1000))


def gradio_login(page: Any, url: str, credentials: tuple[str, str]) -> None:
    """Log in on the labeling app's own login page (team mode with accounts) and wait for the app."""
    page.goto(url)
    page.get_by_label("username").fill(credentials[0])
    page.get_by_label("password").fill(credentials[1])
    page.get_by_role("button", name="Login").click()
    page.wait_for_selector("#vote-a", timeout=60_000)


def rendering_fonts(page: Any, selector: str = "body *") -> dict[str, list[str]]:
    """{font family: the texts drawn with it} for the elements matching ``selector``, as Chromium rendered them,
    with "(system)" added to the name of any font the page did not load itself. A glyph a page's fonts lack is
    drawn from whatever the machine has (or as a box): that shows here as a system font."""
    from playwright.sync_api import Error as PlaywrightError

    cdp = page.context.new_cdp_session(page)
    try:
        cdp.send("DOM.enable")
        cdp.send("CSS.enable")
        root = cdp.send("DOM.getDocument", {"depth": -1, "pierce": True})["root"]["nodeId"]
        used: dict[str, list[str]] = {}
        for node in cdp.send("DOM.querySelectorAll", {"nodeId": root, "selector": selector})["nodeIds"]:
            try:
                fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
                html = cdp.send("DOM.getOuterHTML", {"nodeId": node})["outerHTML"] if fonts else ""
            except PlaywrightError as exc:  # re-rendered away since the query: nothing drawn any more
                if "Could not find node" not in str(exc):
                    raise
                continue
            for font in fonts:
                name = font["familyName"] + ("" if font["isCustomFont"] else " (system)")
                used.setdefault(name, []).append(html[:300])
        return used
    finally:
        cdp.detach()


# The labeling app's boxes that show model output (the tiny test model writes random tokens, any script), left out
# when checking the fonts of the app's own text.
MODEL_TEXT = (
    "#cand-a, #cand-b, #arena-a, #arena-b, #review-a, #review-b, #review-prompt, #conversation, [data-testid='bot']"
)
LABEL_APP_TEXT = f".gradio-container *:not(:is({MODEL_TEXT}), :is({MODEL_TEXT}) *)"
CONSOLE_TEXT = "[data-testid='stApp'] *:not(input[type='file'])"  # a file input's own text is never shown


def system_fonts(page: Any, selector: str) -> dict[str, list[str]]:
    """The system fonts (see `rendering_fonts`) the text of ``selector`` needed: {} when all of it is drawn with
    the fonts the studio serves."""
    return {name: texts for name, texts in rendering_fonts(page, selector).items() if name.endswith("(system)")}


def system_fonts_in_label_app(page: Any) -> dict[str, list[str]]:
    """`system_fonts` of the labeling app's own text on the open tab (model output left out)."""
    return system_fonts(page, LABEL_APP_TEXT)


def console_tab(page: Any, name: str) -> None:
    """Open a tab of a console page whose tabs run lazily (the Data page's): the click reruns the script, and only
    then does the tab's content exist."""
    console_settled(page)
    console_rerun(page, lambda: page.get_by_role("tab", name=name, exact=True).click())
