"""The dashboard in a real browser (Debian's Chromium via Playwright) against the running
daemon. Screenshots of the main views land in test-artifacts/."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import trio
from playwright.sync_api import expect

from droneshield import daemon
from droneshield.db import seed

from .support.browser import Page
from .support.dashboard import LIVE_WITHIN, open_dashboard
from .support.dashboard import report as _report
from .support.dashboard import row as _row
from .support.processes import free_port
from .support.releases import add_software


@pytest.fixture
async def dashboard(browser, running, sensors) -> AsyncIterator[Page]:
    page = await open_dashboard(browser, running.http_port)
    yield page
    await page.close()


async def test_page_shows_seeded_sensors_and_fleet_totals(dashboard, sensors):
    with trio.fail_after(20):
        await dashboard(lambda p: expect(p.locator("#sensor-table tbody tr")).to_have_count(10))
        await dashboard(lambda p: expect(p.locator("#count-total")).to_have_text("10"))
        await dashboard(lambda p: expect(p.locator("#count-never")).to_have_text("10"))
        await dashboard(
            lambda p: expect(p.locator("dl.counts")).not_to_have_attribute("aria-busy", "true")
        )
        first = await dashboard(lambda p: _row(p, sensors[0]).inner_text())
        await dashboard.screenshot("dashboard.png")
    assert "never seen" in first


@pytest.mark.parametrize("width", [1400, 1920])
async def test_the_sensor_table_takes_the_whole_width_and_the_page_never_scrolls_sideways(
    browser, running, sensors, width
):
    """On a wide screen the totals sit beside the fleet's history, and the sensor table (eight
    columns) spans both columns; wide tables scroll inside their panels. Before, the table was
    squeezed into the narrow column (its time columns behind a scroll) and the webhook and
    software tables widened the page."""
    with trio.fail_after(20):
        page = await open_dashboard(browser, running.http_port, width=width, height=900)
        sizes = await page(
            lambda p: p.evaluate(
                """() => ({
                    main: document.querySelector("#fleet").clientWidth,
                    sensors: document.querySelector("#sensors").getBoundingClientRect().width,
                    table: document.querySelector("#sensor-table").scrollWidth,
                    wrap: document.querySelector("#sensors .table-wrap").clientWidth,
                    page: document.documentElement.scrollWidth,
                    window: window.innerWidth,
                })"""
            )
        )
        await page.screenshot(f"dashboard-{width}.png")
        await page.close()
    assert sizes["sensors"] > 0.9 * sizes["main"] - 64, sizes  # main's padding aside
    assert sizes["table"] <= sizes["wrap"], sizes  # every column in sight
    assert sizes["page"] <= sizes["window"], sizes


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


async def test_a_capped_limit_keeps_its_page_count_through_live_totals(
    browser, running, db, sensors
):
    """`limit=1000` is capped to 500 by the server; live totals counted pages of 1,000."""
    await seed.seed(db, 600)
    page = await open_dashboard(browser, running.http_port, "/#/?limit=1000&status=never")
    info = page.page.locator("#page-info")
    with trio.fail_after(30):
        await page(lambda p: expect(info).to_contain_text("Page 1 of 2"))
        text = await page(lambda p: info.inner_text())
        never = int(re.search(r"([\d,]+) sensors", text)[1].replace(",", ""))  # type: ignore[index]
        await _report(running.grpc_port, "DS-00000001")  # one fewer never seen: a new total
        await page(lambda p: expect(info).to_contain_text(f"{never - 1} sensors"))
        await page(lambda p: expect(info).to_contain_text("Page 1 of 2"))
    await page.close()


async def test_paging_and_filters(dashboard, running, db):
    await seed.seed(db, 120)
    await add_software(db, "1.0.0")
    for serial in ("DS-00000002", "DS-00000005", "DS-00000007"):
        await _report(running.grpc_port, serial)
    await _report(running.grpc_port, "DS-00000009", "v1.0.0")
    rows = "#sensor-table tbody tr"
    with trio.fail_after(40):
        await dashboard(lambda p: p.reload())
        await dashboard(lambda p: expect(p.locator(rows)).to_have_count(50))
        await dashboard(
            lambda p: expect(p.locator("#page-info")).to_have_text("Page 1 of 3 · 120 sensors")
        )

        def next_by_keyboard(p):  # type: ignore[no-untyped-def]
            p.get_by_role("button", name="Next").focus()
            p.keyboard.press("Enter")

        await dashboard(next_by_keyboard)
        await dashboard(lambda p: expect(p.locator(rows).first).to_contain_text("DS-00000051"))
        await dashboard(lambda p: p.get_by_role("button", name="Last", exact=True).click())
        await dashboard(lambda p: expect(p.locator(rows)).to_have_count(20))
        await dashboard(lambda p: expect(p.get_by_role("button", name="Next")).to_be_disabled())
        await dashboard(lambda p: p.get_by_role("button", name="First").click())
        await dashboard(lambda p: expect(p.locator(rows).first).to_contain_text("DS-00000001"))
        await dashboard(lambda p: p.get_by_label("Per page", exact=True).select_option("25"))
        await dashboard(lambda p: expect(p.locator("#page-info")).to_contain_text("of 5"))

        await dashboard(lambda p: p.get_by_label("Status", exact=True).select_option("online"))
        await dashboard(lambda p: expect(p.locator(rows)).to_have_count(4))
        await dashboard(lambda p: p.get_by_label("Version", exact=True).select_option("v1.0.0"))
        await dashboard(lambda p: expect(p.locator(rows)).to_have_count(1))
        await dashboard(lambda p: expect(p.locator(rows).first).to_contain_text("DS-00000009"))
        await dashboard.screenshot("filters.png")

        await dashboard(lambda p: p.get_by_label("Version", exact=True).select_option(""))
        await dashboard(lambda p: p.get_by_label("Status", exact=True).select_option(""))
        await dashboard(lambda p: p.get_by_label("Serial or label", exact=True).fill("DS-0000011"))
        await dashboard(lambda p: expect(p.locator(rows)).to_have_count(10))
        url = await dashboard(lambda p: p.url)
    assert "q=DS-0000011" in url  # the view is in the URL, so it survives a reload


def _pdf(name: str, body: bytes = b"%PDF-1.4\n% a release\n%%EOF\n") -> dict:
    return {"name": name, "mimeType": "application/pdf", "buffer": body}


async def test_uploading_two_pdfs_lists_them_newest_first(dashboard):
    files = [_pdf("software_v1.2.3.pdf"), _pdf("software_v1.10.0.pdf")]
    with trio.fail_after(30):
        await dashboard(lambda p: p.locator("#file-input").set_input_files(files))
        await dashboard(lambda p: expect(p.locator(".upload.ok")).to_have_count(2))
        statuses = await dashboard(lambda p: p.locator(".upload-status").all_inner_texts())
        await dashboard(lambda p: expect(p.locator("#catalogue tbody tr")).to_have_count(2))
        versions = await dashboard(lambda p: p.locator("#catalogue tbody th").all_inner_texts())
        link = await dashboard(
            lambda p: p.locator("#catalogue tbody a").first.get_attribute("href")
        )
        await dashboard.screenshot("software.png")
    assert sorted(statuses) == ["stored as v1.10.0", "stored as v1.2.3"]
    assert versions == ["v1.10.0", "v1.2.3"]  # semver order, not text order
    assert link == "/software/v1.10.0/file"


async def test_bad_files_show_their_errors(dashboard):
    files = [_pdf("notes_v2.0.0.pdf", b"just text"), _pdf("release-notes.pdf")]
    with trio.fail_after(30):
        await dashboard(lambda p: p.locator("#file-input").set_input_files(files))
        await dashboard(lambda p: expect(p.locator(".upload.failed")).to_have_count(2))
        errors = await dashboard(lambda p: p.locator(".upload.failed").all_inner_texts())
        await dashboard(lambda p: expect(p.locator("#catalogue")).to_contain_text("No releases"))
        await dashboard.screenshot("upload-errors.png")
    not_pdf, no_version = sorted(errors, key=lambda text: "notes_v2.0.0" not in text)
    assert "PDF" in not_pdf
    assert "version" in no_version


async def test_an_answer_the_page_cannot_read_fails_only_its_own_upload(dashboard):
    """The first upload is answered 200 with a body that is not the API's (a proxy's page,
    say): that upload fails, and the next one is still sent."""
    answered: list[str] = []

    def first_garbled(route: Any) -> None:
        if not answered:
            answered.append(route.request.url)
            route.fulfill(status=200, content_type="text/html", body="<html>proxy</html>")
        else:
            route.continue_()

    files = [_pdf("software_v5.0.0.pdf"), _pdf("software_v5.1.0.pdf")]
    with trio.fail_after(30):
        await dashboard(lambda p: p.route("**/upload", first_garbled))
        await dashboard(lambda p: p.locator("#file-input").set_input_files(files))
        await dashboard(lambda p: expect(p.locator(".upload.failed")).to_have_count(1))
        await dashboard(lambda p: expect(p.locator(".upload.ok")).to_have_count(1))
        ok = await dashboard(lambda p: p.locator(".upload.ok .upload-status").inner_text())
    assert ok == "stored as v5.1.0"


@pytest.fixture
def keyed_settings(settings):
    return settings.replace(api_key="s3cret")


async def test_upload_asks_for_the_api_key_and_remembers_it(
    browser, aio_loop, database_url, keyed_settings, nursery
):
    running = await nursery.start(daemon.run, keyed_settings, database_url)
    with trio.fail_after(30):
        page = await open_dashboard(browser, running.http_port)
        await page(lambda p: p.locator("#file-input").set_input_files([_pdf("v3.0.0.pdf")]))
        await page(lambda p: expect(p.get_by_role("dialog")).to_be_visible())
        await page(lambda p: p.get_by_label("API key", exact=True).fill("s3cret"))
        await page(lambda p: p.get_by_role("button", name="Save and retry").click())
        await page(lambda p: expect(p.locator(".upload.ok, .upload.failed")).to_have_count(1))
        status = await page(lambda p: p.locator(".upload-status").inner_text())
        stored = await page(lambda p: p.evaluate("localStorage.getItem('droneshield.apiKey')"))
        await page.close()
    assert status == "stored as v3.0.0"
    assert stored == "s3cret"


async def test_refused_upload_tells_the_browser_not_to_reuse_the_connection(
    aio_loop, database_url, keyed_settings, nursery
):
    # The 401 comes before the body is read; Chromium then stops sending the body, and had it
    # reused the connection its retry would be read as that body (the browser test above hung).
    running = await nursery.start(daemon.run, keyed_settings, database_url)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.http_port}") as api:
        with trio.fail_after(10):
            refused = await api.post("/upload", files={"file": ("v1.0.0.pdf", b"%PDF-")})
    assert refused.status_code == 401
    assert refused.headers["connection"] == "close"


async def test_phone_width_has_no_sideways_scrolling(browser, running, sensors):
    with trio.fail_after(20):
        page = await open_dashboard(browser, running.http_port, width=390, height=844)
        await page(lambda p: expect(p.locator("#sensor-table tbody tr")).to_have_count(10))
        wide = await page(
            lambda p: p.evaluate("document.documentElement.scrollWidth > window.innerWidth")
        )
        await page.screenshot("phone.png")
        await page.close()
    assert not wide


async def test_reconnects_and_resyncs_after_the_server_restarts(
    browser, aio_loop, database_url, settings, db, sensors
):
    fixed = settings.replace(http_port=free_port())
    banner = "#connection"
    with trio.fail_after(60):
        async with trio.open_nursery() as first:
            await first.start(daemon.run, fixed, database_url)
            page = await open_dashboard(browser, fixed.http_port)
            first.cancel_scope.cancel()
        await page(lambda p: expect(p.locator(banner)).to_contain_text("Reconnecting"))
        await page.screenshot("reconnecting.png")
        # What changes while the page is cut off must show once it is back.
        await db.execute(
            "UPDATE sensor SET online = true, last_seen_at = now(), status_changed_at = now() "
            "WHERE serial = $1",
            sensors[0],
        )
        async with trio.open_nursery() as second:
            await second.start(daemon.run, fixed, database_url)
            await page(lambda p: expect(p.locator(banner)).to_have_text("Live", timeout=20_000))
            await page(
                lambda p: expect(_row(p, sensors[0]).locator(".badge")).to_have_text("online")
            )
            await page.close()
            second.cancel_scope.cancel()


async def test_silent_sensor_turns_offline_on_screen(
    browser, aio_loop, database_url, settings, sensors, nursery
):
    quick = settings.replace(offline_after=1.0, wheel_resolution=0.1)
    running = await nursery.start(daemon.run, quick, database_url)
    badge = "online"
    with trio.fail_after(30):
        page = await open_dashboard(browser, running.http_port)
        await _report(running.grpc_port, sensors[0])
        await page(
            lambda p: expect(_row(p, sensors[0]).locator(".badge")).to_have_text(
                badge, timeout=LIVE_WITHIN
            )
        )
        await page(
            lambda p: expect(_row(p, sensors[0]).locator(".badge")).to_have_text(
                "offline",
                timeout=int((quick.offline_after + quick.wheel_resolution) * 1000) + LIVE_WITHIN,
            )
        )
        await page(lambda p: expect(p.locator("#count-offline")).to_have_text("1"))
        await page.screenshot("offline.png")
        await page.close()


async def test_a_key_the_server_refused_is_forgotten(
    browser, aio_loop, database_url, keyed_settings, nursery
):
    running = await nursery.start(daemon.run, keyed_settings, database_url)
    with trio.fail_after(30):
        page = await open_dashboard(browser, running.http_port)
        await page(lambda p: p.evaluate("localStorage.setItem('droneshield.apiKey', 'stale')"))
        await page(lambda p: p.locator("#file-input").set_input_files([_pdf("v3.0.0.pdf")]))
        await page(lambda p: expect(p.get_by_role("dialog")).to_be_visible())
        stored = await page(lambda p: p.evaluate("localStorage.getItem('droneshield.apiKey')"))
        await page.close()
    assert stored is None


async def test_version_chart_leaves_room_for_a_million_sensors(dashboard):
    # The chart as /summary would make it at 1M sensors on one version (seeding a million here
    # would take the test's whole budget): every total must end inside the drawing.
    script = """async () => {
        const { Summary } = await import("/client/js/summary.js");
        const row = { version: "v10.20.30", total: 1000000, online: 999999, offline: 1, never: 0 };
        const svg = new Summary({ counts: {}, chart: null }).draw([{ ...row, label: row.version }]);
        document.body.append(svg);
        const width = svg.viewBox.baseVal.width;
        const right = Math.max(...[...svg.querySelectorAll("text")].map((t) => {
            const box = t.getBBox();
            return box.x + box.width;
        }));
        const value = svg.querySelector("text.value").textContent;
        svg.remove();
        return { width, right, value };
    }"""
    with trio.fail_after(20):
        drawn = await dashboard(lambda p: p.evaluate(script))
    assert drawn["value"] == "1,000,000"
    assert drawn["right"] <= drawn["width"], drawn


@pytest.mark.parametrize("shown", ["1h", "30d"])
async def test_the_live_point_is_not_drawn_after_a_newer_sample(
    browser, running, sensors, db, shown
):
    """Live totals come only with changes: on a quiet fleet the last ones can be minutes older
    than the samples a reload brings, and were still drawn as the newest point (the line went
    back in time, ending on old totals). Over 30 days a point stands at its hour's start but
    holds the hour's last sample: compared by the start, the live totals were drawn after it."""
    chart = "#history-chart"
    with trio.fail_after(30):
        page = await open_dashboard(browser, running.http_port, fake_clock=True)
        try:
            await _report(running.grpc_port, sensors[0])
            now = re.compile(r"^now: 1 online")
            await page(lambda p: expect(p.locator("#history-now")).to_have_text(now))
            # The next minute's sample, 7 online, read by a reload a minute later with no
            # change meanwhile (the page's clock moved; no timer fired).
            await db.execute(
                "INSERT INTO fleet_history (minute, online, offline, never, versions, sites) "
                "VALUES (date_bin('1 minute', now(), 'epoch'::timestamptz) + interval "
                "'1 minute', 7, 0, 3, '{}', '{}')"
            )
            later = await page(lambda p: p.evaluate("Date.now()")) / 1000 + 61
            await page(lambda p: p.clock.set_system_time(datetime.fromtimestamp(later, UTC)))
            await page(lambda p: p.get_by_label("Range", exact=True).select_option(shown))
            await page(
                lambda p: expect(p.locator(f"{chart} path.online")).to_have_attribute(
                    "data-last", "7"
                )
            )
        finally:
            await page.close()


async def test_first_paint_says_it_is_loading_and_the_totals_replace_it(running, sensors):
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.http_port}") as api:
        with trio.fail_after(10):
            page = (await api.get("/")).text
    assert 'class="counts" aria-busy="true"' in page
    assert "Loading the fleet" in page
    assert "\u2013</dd>" not in page  # no dashes standing for numbers


async def test_fleet_history_chart_draws_samples_and_grows_live(browser, running, sensors, db):
    # Samples 20, 90 and 150 minutes ago; the daemon's sampler wrote the current minute. Those
    # earlier tests' daemons wrote in earlier minutes go (one a minute they ran in: this test
    # saw as many more as the suite had run minutes). Should a minute start while this test
    # runs, the sampler adds it: one more sample is as right as the others.
    await db.execute(
        "DELETE FROM fleet_history WHERE minute < date_bin('1 minute', now(), 'epoch')"
    )
    await db.execute(
        "INSERT INTO fleet_history (minute, online, offline, never, versions, sites) "
        "SELECT date_bin('1 minute', now(), 'epoch'::timestamptz) - m * interval '1 minute', "
        "m / 30, 1, 9 - m / 30, '{}', '{}' FROM unnest(ARRAY[20, 90, 150]) AS m"
    )
    chart = "#history-chart"
    with trio.fail_after(30):
        page = await open_dashboard(browser, running.http_port)
        try:
            await page(
                lambda p: expect(p.locator(chart)).to_have_attribute(
                    "data-samples", re.compile("^[45]$")
                )
            )
            await page(lambda p: expect(p.locator(f"{chart} path.line")).to_have_count(3))
            await page(lambda p: expect(p.locator("#history-now")).to_contain_text("0 online"))
            await _report(running.grpc_port, sensors[0])
            # The live totals become the chart's newest point, without a reload.
            await page(lambda p: expect(p.locator("#history-now")).to_contain_text("1 online"))
            await page(
                lambda p: expect(p.locator(f"{chart} path.online")).to_have_attribute(
                    "data-last", "1"
                )
            )
            await page.screenshot("history.png")
            await page(lambda p: p.get_by_label("Range", exact=True).select_option("1h"))
            await page(
                lambda p: expect(p.locator(chart)).to_have_attribute(
                    "data-samples", re.compile("^[23]$")
                )
            )
        finally:
            await page.close()
