"""The dashboard in a real browser (Debian's Chromium via Playwright) against the running
daemon. Screenshots of the main views land in test-artifacts/."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
from playwright.sync_api import expect

from droneshield.db import seed
from droneshield.ingest.proto.status import DeviceStatus

from .browser import BrowserThread, Page, open_page
from .grpc_clients import aio, grpclib_stub

LIVE_WITHIN = 1_000  # ms: a report shows on screen within this, without a reload


def _row(p, serial: str):  # type: ignore[no-untyped-def]
    return p.locator(f'tr[data-serial="{serial}"]')


async def _open(browser: BrowserThread, port: int, **size: int) -> Page:
    page = await open_page(browser, f"http://127.0.0.1:{port}", **size)
    await page(lambda p: p.goto("/"))
    await page(lambda p: expect(p.locator("#connection")).to_have_text("Live"))
    return page


@pytest.fixture
async def dashboard(browser, running, sensors) -> AsyncIterator[Page]:
    page = await _open(browser, running.http_port)
    yield page
    await page.close()


async def _report(port: int, serial: str, version: str = "") -> None:
    async with grpclib_stub(port) as stub:
        await aio(stub.send_status, DeviceStatus(serial=serial, software_version=version))


async def test_page_shows_seeded_sensors_and_fleet_totals(dashboard, sensors):
    with trio.fail_after(20):
        await dashboard(lambda p: expect(p.locator("#sensor-table tbody tr")).to_have_count(10))
        await dashboard(lambda p: expect(p.locator("#count-total")).to_have_text("10"))
        await dashboard(lambda p: expect(p.locator("#count-never")).to_have_text("10"))
        first = await dashboard(lambda p: _row(p, sensors[0]).inner_text())
        await dashboard.screenshot("dashboard.png")
    assert "never seen" in first


async def test_report_turns_its_row_online_without_reload(dashboard, running, sensors):
    with trio.fail_after(20):
        await dashboard(lambda p: expect(_row(p, sensors[3])).to_be_visible())
        await _report(running.grpc_port, sensors[3])
        await dashboard(
            lambda p: expect(_row(p, sensors[3]).locator(".badge")).to_have_text(
                "online", timeout=LIVE_WITHIN
            )
        )
        await dashboard(lambda p: expect(_row(p, sensors[3])).to_have_class("flash"))
        await dashboard(lambda p: expect(p.locator("#count-online")).to_have_text("1"))
        await dashboard.screenshot("live-update.png")
