"""The dashboard as its browser tests drive it: opening it live, finding a sensor's row,
reporting as a sensor would."""

from __future__ import annotations

from typing import Any, Final

from playwright.sync_api import expect

from droneshield.ingest.proto.status import DeviceStatus

from .browser import BrowserThread, Page, open_page
from .grpc_clients import aio, grpclib_stub

LIVE_WITHIN: Final = 1_000  # ms: a report shows on screen within this, without a reload


def row(p: Any, serial: str) -> Any:
    return p.locator(f'tr[data-serial="{serial}"]')


async def open_dashboard(
    browser: BrowserThread,
    port: int,
    path: str = "/",
    *,
    ready: tuple[str, str] = ("#page-info", "sensors"),
    fake_clock: bool = False,
    **size: int,
) -> Page:
    """The dashboard at `path`, live, once the element `ready[0]` contains `ready[1]` (the view
    has loaded, and so subscribed to what it shows). With `fake_clock`, Playwright's clock is
    installed before the page loads, so that the timers it starts are the test's too."""
    page = await open_page(browser, f"http://127.0.0.1:{port}", **size)
    if fake_clock:
        await page(lambda p: p.clock.install())
    await page(lambda p: p.goto(path))
    selector, text = ready
    await page(lambda p: expect(p.locator(selector)).to_contain_text(text))
    await live(page)
    return page


async def live(page: Page) -> None:
    """Until the page is live and the server has confirmed every subscription it sent (so
    changes to what is on screen are flowing)."""
    await page(lambda p: expect(p.locator("#connection")).to_have_text("Live"))
    await page(lambda p: expect(p.locator("#connection")).to_have_attribute("data-pending", "0"))


async def report(port: int, serial: str, version: str = "") -> None:
    async with grpclib_stub(port) as stub:
        await aio(stub.send_status, DeviceStatus(serial=serial, software_version=version))
