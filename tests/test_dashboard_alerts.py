"""The dashboard's Alerts panel in a real browser: add a webhook for a site (asking for the API
key), see its delivery health, remove it."""

from __future__ import annotations

from typing import Any

import httpx
import trio
from playwright.sync_api import expect

from droneshield import daemon

from .support.browser import open_page
from .support.receivers import Receiver


async def test_alerts_panel_adds_shows_health_and_removes_a_webhook(
    browser, aio_loop, database_url, settings, nursery
):
    keyed = settings.replace(api_key="s3cret", webhook_allow_hosts="127.0.0.1")
    running = await nursery.start(daemon.run, keyed, database_url)
    receiver = await nursery.start(Receiver(answer=lambda _: 503).serve)
    with trio.fail_after(40):
        page = await open_page(browser, f"http://127.0.0.1:{running.http_port}")
        await page(lambda p: p.goto("/#alerts"))
        await page(lambda p: p.get_by_label("Webhook URL").fill(receiver.url))
        await page(lambda p: p.get_by_label("Secret (signs each POST)").fill("0123456789abcdef"))
        await page(lambda p: p.get_by_label("release uploaded").check())
        await page(lambda p: p.get_by_label("Site (optional)").fill("north"))
        await page(lambda p: p.get_by_role("button", name="Add webhook").click())
        await page(lambda p: expect(p.get_by_role("dialog")).to_be_visible())
        await page(lambda p: p.get_by_label("API key", exact=True).fill("s3cret"))
        await page(lambda p: p.get_by_role("button", name="Save and retry").click())
        row = "#webhooks tbody tr"
        await page(lambda p: expect(p.locator(row)).to_have_count(1))
        await page(
            lambda p: expect(p.locator(row)).to_contain_text("sensor.offline, release.uploaded")
        )
        await page(lambda p: expect(p.locator(row)).to_contain_text("site north"))
        await page(lambda p: expect(p.locator(row)).to_contain_text("healthy"))
        # A test event meets a failing endpoint: the panel shows it retrying, with the error.
        await page(
            lambda p: p.evaluate(
                "fetch('/webhooks/' + document.querySelector('#webhooks tbody tr').dataset.id"
                " + '/test', {method: 'POST', headers: {Authorization: 'Bearer s3cret'}})"
            )
        )
        await receiver.wait_until(lambda r: len(r.posts) >= 1)
        await page(lambda p: p.reload())
        await page(lambda p: expect(p.locator(row)).to_contain_text("retrying", timeout=10_000))
        await page(lambda p: expect(p.locator(row)).to_contain_text("HTTP 503"))
        await page.screenshot("alerts.png")
        await page(lambda p: p.get_by_role("button", name=f"Remove webhook {receiver.url}").click())
        await page(lambda p: expect(p.locator(row)).to_have_count(0))
        await page(lambda p: expect(p.locator("#webhook-message")).to_contain_text("removed"))
        await page.close()


async def test_a_failed_poll_is_forgotten_once_one_succeeds_and_serials_are_shown(
    browser, aio_loop, database_url, settings, nursery
):
    """A webhook limited to some sensors says so (it read as covering the fleet); an error of
    one failed poll stayed on screen after the next ones succeeded. Timers on Playwright's
    clock: the panel polls every 5 s."""
    allowed = settings.replace(webhook_allow_hosts="127.0.0.1")
    running = await nursery.start(daemon.run, allowed, database_url)
    hook = {
        "url": "http://127.0.0.1:9/alerts",
        "events": ["sensor.offline"],
        "secret": "0123456789abcdef",
        "filter": {"serials": ["DS-1", "DS-2"]},
    }
    base = f"http://127.0.0.1:{running.http_port}"
    async with httpx.AsyncClient(base_url=base) as api:
        assert (await api.post("/webhooks", json=hook)).status_code == 201
    polls: list[str] = []

    def first_fails(route: Any) -> None:
        polls.append(route.request.method)
        if len(polls) == 1:
            route.fulfill(status=503, json={"error": {"code": "unavailable", "message": "busy"}})
        else:
            route.continue_()

    message = "#webhook-message"
    with trio.fail_after(40):
        page = await open_page(browser, base)
        await page(lambda p: p.clock.install())
        await page(lambda p: p.route("**/webhooks", first_fails))
        await page(lambda p: p.goto("/#alerts"))
        await page(lambda p: expect(p.locator(message)).to_contain_text("could not be loaded"))
        await page(lambda p: p.clock.run_for(6_000))
        await page(
            lambda p: expect(p.locator("#webhooks tbody tr")).to_contain_text(
                "2 sensors: DS-1, DS-2"
            )
        )
        await page(lambda p: expect(p.locator(message)).to_have_text(""))
        await page.close()
