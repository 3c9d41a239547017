"""Chromium for the dashboard tests: Debian's package, driven by Playwright's sync API in one
dedicated thread.

Why a thread: Playwright's Python API runs on asyncio (its sync API hides an event loop of its
own) and its objects must stay on the thread that created them, while the tests and the daemon
run on trio. So one long-lived thread owns Playwright and the browser for the whole session; a
test hands it a function and awaits the result through `trio.to_thread.run_sync` (cancellable,
so `fail_after` still bounds every step). The daemon stays in the test's own trio run, with the
usual fixtures: a fresh database per test, the hub at hand, restartable on the same port.

Chromium is never downloaded by Playwright: `/usr/bin/chromium` is installed with apt when
missing.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Final, TypeVar

import trio

from .apt import ensure_package

CHROMIUM: Final = Path("/usr/bin/chromium")
CHROMIUM_ARGS: Final = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
STEP_TIMEOUT: Final = 5_000  # ms Playwright waits in one step (locators, navigation)
ARTIFACTS: Final = Path(__file__).resolve().parents[2] / "test-artifacts"

T = TypeVar("T")


def ensure_chromium() -> str | None:
    """Install Debian's chromium if it is missing. Returns why it cannot be had, or None."""
    return ensure_package("chromium", CHROMIUM)


class BrowserThread:
    """One thread that owns Playwright and a launched Chromium; runs jobs for other threads."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[Callable[[Any], Any], Future[Any]] | None] = queue.Queue()
        self._ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, name="playwright", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.result()

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join()

    def _run(self) -> None:
        from playwright.sync_api import sync_playwright

        # trio-asyncio replaces the event loop policy; outside trio it keeps one per thread,
        # so this thread can have plain asyncio loops (Playwright's) without touching trio's.
        asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
                )
                self._ready.set_result(None)
                while (job := self._jobs.get()) is not None:
                    work, future = job
                    try:
                        future.set_result(work(browser))
                    except BaseException as exc:
                        future.set_exception(exc)
                browser.close()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            raise

    def call(self, work: Callable[[Any], T]) -> T:
        """Run `work(browser)` on the browser thread and return its result (blocking)."""
        future: Future[T] = Future()
        self._jobs.put((work, future))
        return future.result()

    async def run(self, work: Callable[[Any], T]) -> T:
        return await trio.to_thread.run_sync(self.call, work, abandon_on_cancel=True)


class Page:
    """A browser page as tests use it: `await page(lambda p: p.goto(url))` runs the function
    on the browser thread with the Playwright page."""

    def __init__(self, browser: BrowserThread, page: Any, base_url: str, errors: list[str]) -> None:
        self._browser = browser
        self.page = page
        self.base_url = base_url
        self.errors = errors  # uncaught exceptions in the page's scripts

    async def __call__(self, work: Callable[[Any], T]) -> T:
        """Raises: whatever `work` raises, after a screenshot of the page as it was then
        (test-artifacts/failed-<test>.png)."""
        return await self._browser.run(lambda _: self._with_evidence(work))

    def _with_evidence(self, work: Callable[[Any], T]) -> T:
        try:
            return work(self.page)
        except Exception:
            test = os.environ.get("PYTEST_CURRENT_TEST", "test").split(" ")[0]
            ARTIFACTS.mkdir(exist_ok=True)
            name = "".join(c if c.isalnum() else "-" for c in test.rsplit("::", 1)[-1])
            self.page.screenshot(path=str(ARTIFACTS / f"failed-{name}.png"), full_page=True)
            raise

    async def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        await self(lambda p: p.screenshot(path=str(path), full_page=True))
        return path

    async def close(self) -> None:
        """Raises: AssertionError if a script on the page threw an uncaught exception."""
        await self(lambda p: p.context.close())
        assert not self.errors, f"errors in the page's scripts: {self.errors}"


async def open_page(
    browser: BrowserThread, base_url: str, *, width: int = 1280, height: int = 900
) -> Page:
    errors: list[str] = []

    def new(b: Any) -> Any:
        context = b.new_context(
            viewport={"width": width, "height": height}, base_url=base_url, locale="en-GB"
        )
        context.set_default_timeout(STEP_TIMEOUT)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        return page

    return Page(browser, await browser.run(new), base_url, errors)
