"""The dashboard's views in Chromium against the running daemon: a sensor's own page and its
live timeline, the address as the view (Back, Forward, an edited address), sorting by a column
header, live rows that stay true on a filtered page, and the stale banner when the daemon stops.
Screenshots land in test-artifacts/."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import trio
from playwright.sync_api import expect

from droneshield import daemon
from droneshield.db import seed
from droneshield.domain import SensorState
from droneshield.ingest.proto.status import DeviceStatus, DeviceStatusBatch

from .support.browser import BrowserThread, Page, open_page
from .support.dashboard import LIVE_WITHIN, live, open_dashboard, report, row
from .support.grpc_clients import aio, grpclib_stub
from .support.processes import free_port
from .support.releases import add_software

SENSOR_READY = ("#sensor-facts", "Status")
TIMELINE = "#sensor-timeline li[data-kind]"


async def test_a_row_opens_its_sensor_and_back_returns_to_the_list(browser, running, db, sensors):
    await add_software(db, "1.0.0")
    await report(running.grpc_port, sensors[2], "v1.0.0")
    with trio.fail_after(40):
        page = await open_dashboard(browser, running.http_port, "/#/?status=online")
        await page(lambda p: row(p, sensors[2]).locator("td").first.click())
        await page(lambda p: expect(p.locator("#sensor-title")).to_have_text(sensors[2]))
        await page(lambda p: expect(p.locator("#sensor-status")).to_have_text("online"))
        link = page.page.get_by_role("link", name="Download v1.0.0")
        href = await page(lambda p: link.get_attribute("href"))
        first_report = page.page.locator(TIMELINE).filter(has_text="online (first report)")
        await page(lambda p: expect(first_report).to_have_count(1))
        opened = await page(lambda p: p.url)
        await page.screenshot("sensor.png")

        await page(lambda p: p.go_back())
        await page(lambda p: expect(row(p, sensors[2])).to_be_visible())
        await page(lambda p: expect(p.locator("#sensor-view")).to_be_hidden())
        listed = await page(lambda p: p.url)
        await page(lambda p: p.go_forward())
        await page(lambda p: expect(p.locator("#sensor-title")).to_have_text(sensors[2]))
        await page(lambda p: p.go_back())

        def open_by_keyboard(p):  # type: ignore[no-untyped-def]
            row(p, sensors[2]).focus()
            p.keyboard.press("Enter")

        await page(open_by_keyboard)
        await page(lambda p: expect(p.locator("#sensor-status")).to_have_text("online"))
        await page.close()
    assert opened.endswith(f"/#/sensors/{sensors[2]}")
    assert listed.endswith("/#/?status=online")
    assert href == "/software/v1.0.0/file"


async def test_a_sensor_page_grows_its_timeline_live(browser, running, db, sensors):
    await add_software(db, "2.0.0")
    with trio.fail_after(30):
        page = await open_dashboard(
            browser, running.http_port, f"/#/sensors/{sensors[3]}", ready=SENSOR_READY
        )
        await page(lambda p: expect(p.locator("#sensor-status")).to_have_text("never seen"))
        await report(running.grpc_port, sensors[3])
        await page(
            lambda p: expect(p.locator(TIMELINE).first).to_have_text(
                re.compile(r"online \(first report\)$"), timeout=LIVE_WITHIN
            )
        )
        await report(running.grpc_port, sensors[3], "v2.0.0")
        await page(
            lambda p: expect(p.locator(TIMELINE).first).to_contain_text(
                "version none → v2.0.0", timeout=LIVE_WITHIN
            )
        )
        await page(lambda p: expect(p.locator(TIMELINE)).to_have_count(2))
        await page(lambda p: expect(p.locator("#sensor-status")).to_have_text("online"))
        await page.screenshot("sensor-timeline.png")
        await page.close()


async def test_a_column_header_sorts_and_the_sort_is_in_the_address(browser, running, sensors):
    await report(running.grpc_port, sensors[4])  # the one sensor ever seen
    header = 'th[data-key="last_seen_at"]'
    with trio.fail_after(30):
        page = await open_dashboard(browser, running.http_port)
        await page(
            lambda p: expect(p.locator('th[data-key="serial"]')).to_have_attribute(
                "aria-sort", "ascending"
            )
        )
        await page(lambda p: p.get_by_role("button", name="Last seen").click())
        await page(lambda p: expect(p.locator(header)).to_have_attribute("aria-sort", "descending"))
        rows = page.page.locator("#sensor-table tbody tr")
        await page(lambda p: expect(rows.first).to_have_attribute("data-serial", sensors[4]))
        sorted_url = await page(lambda p: p.url)
        await page.screenshot("sorted.png")
        await page(lambda p: p.get_by_role("button", name="Last seen").click())
        await page(lambda p: expect(p.locator(header)).to_have_attribute("aria-sort", "ascending"))
        await page(lambda p: expect(rows.last).to_have_attribute("data-serial", sensors[4]))
        await page(lambda p: p.go_back())
        await page(lambda p: expect(p.locator(header)).to_have_attribute("aria-sort", "descending"))
        await page(lambda p: expect(rows.first).to_have_attribute("data-serial", sensors[4]))
        await page.close()
    assert sorted_url.endswith("#/?sort=last_seen_at&order=desc")


async def test_rows_leave_a_filtered_page_and_new_matches_are_announced(browser, running, sensors):
    rows = "#sensor-table tbody tr[data-serial]"
    with trio.fail_after(40):
        page = await open_dashboard(browser, running.http_port, "/#/?status=never")
        await page(lambda p: expect(p.locator(rows)).to_have_count(10))
        await report(running.grpc_port, sensors[0])
        leaving = page.page.locator(f"{rows}[data-leaving]")
        await page(lambda p: expect(leaving).to_have_count(1, timeout=LIVE_WITHIN))
        await page(lambda p: expect(leaving).to_contain_text("no longer matches"))
        await page(lambda p: expect(p.locator("#sensor-notice")).to_contain_text("1 leaving"))
        await page.screenshot("leaving.png")
        await page(lambda p: p.locator("#sensor-notice").get_by_role("button").click())
        await page(lambda p: expect(p.locator(rows)).to_have_count(9))
        await page(lambda p: expect(row(p, sensors[0])).to_have_count(0))

        # The address edited by hand: the online sensors, then two more come online.
        await page(lambda p: p.goto("/#/?status=online"))
        await page(lambda p: expect(p.locator(rows)).to_have_count(1))
        await live(page)
        await report(running.grpc_port, sensors[5])
        await report(running.grpc_port, sensors[6])
        notice = page.page.locator("#sensor-notice")
        await page(lambda p: expect(notice).to_have_text("2 new — show", timeout=LIVE_WITHIN))
        # The page's total follows the fleet's at once; the rows come with the refresh.
        await page(lambda p: expect(p.locator("#page-info")).to_contain_text("3 sensors"))
        await page(lambda p: expect(p.locator(rows)).to_have_count(1))
        await page.screenshot("entering.png")
        await page(lambda p: notice.get_by_role("button", name="show").click())
        await page(lambda p: expect(p.locator(rows)).to_have_count(3))
        await page(lambda p: expect(notice).to_be_hidden())
        await page.close()


async def test_a_retired_row_is_marked_and_leaves_and_its_page_follows_operators(
    browser, running, api, sensors
):
    rows = "#sensor-table tbody tr[data-serial]"
    with trio.fail_after(40):
        page = await open_dashboard(browser, running.http_port, "/#/?status=never")
        await page(lambda p: expect(p.locator(rows)).to_have_count(10))
        assert (await api.delete(f"/sensors/{sensors[1]}")).status_code == 204
        retired = row(page.page, sensors[1])
        await page(lambda p: expect(retired).to_have_attribute("data-leaving", "retired"))
        await page(lambda p: expect(retired.locator(".badge")).to_have_text("retired"))
        await page(lambda p: expect(p.locator("#page-info")).to_contain_text("9 sensors"))
        await page.screenshot("retired.png")
        await page(lambda p: p.locator("#sensor-notice").get_by_role("button").click())
        await page(lambda p: expect(p.locator(rows)).to_have_count(9))
        await page(lambda p: expect(retired).to_have_count(0))

        # A sensor's page: an operator's label, then its retirement, arrive live.
        await page(lambda p: p.goto(f"/#/sensors/{sensors[2]}"))
        await page(lambda p: expect(p.locator("#sensor-facts")).to_contain_text("Status"))
        await live(page)
        await api.patch(f"/sensors/{sensors[2]}", json={"label": "Mast 2"})
        facts = page.page.locator("#sensor-facts")
        await page(lambda p: expect(facts).to_contain_text("Mast 2", timeout=LIVE_WITHIN))
        await api.delete(f"/sensors/{sensors[2]}")
        await page(lambda p: expect(p.locator("#sensor-status")).to_have_text("retired"))
        await page(lambda p: expect(p.locator(TIMELINE).first).to_have_text(re.compile("retired$")))

        # An online sensor retired goes offline then: live, as its history says after a reload.
        await report(running.grpc_port, sensors[3], "")
        await page(lambda p: p.goto(f"/#/sensors/{sensors[3]}"))
        await page(lambda p: expect(p.locator("#sensor-status")).to_have_text("online"))
        await live(page)
        await api.delete(f"/sensors/{sensors[3]}")
        await page(lambda p: expect(p.locator("#sensor-status")).to_have_text("retired"))
        top = re.compile(" retired$"), re.compile(" offline "), re.compile(" online ")
        await page(lambda p: expect(p.locator(TIMELINE)).to_have_text(list(top)))
        await page(lambda p: p.reload())
        await page(lambda p: expect(p.locator(TIMELINE)).to_have_text(list(top)))
        await page.close()


async def test_heartbeats_do_not_flash_and_unreleased_versions_show_as_not_stored(
    browser, running, db, sensors
):
    await add_software(db, "1.0.0")
    await report(running.grpc_port, sensors[0], "v1.0.0")
    with trio.fail_after(30):
        page = await open_dashboard(browser, running.http_port)
        await report(running.grpc_port, sensors[0], "v1.0.0")
        seen = await db.fetchval("SELECT last_seen_at FROM sensor WHERE serial = $1", sensors[0])
        last_seen = row(page.page, sensors[0]).locator('[data-label="Last seen"] time')
        await page(
            lambda p: expect(last_seen).to_have_attribute(
                "datetime", seen.isoformat(), timeout=LIVE_WITHIN
            )
        )
        await page(lambda p: expect(row(p, sensors[0])).not_to_have_class(re.compile("flash")))

        await report(running.grpc_port, sensors[0], "v4.0.0")
        version = row(page.page, sensors[0]).locator('[data-label="Version"]')
        await page(lambda p: expect(version).to_have_text("v4.0.0 not stored", timeout=LIVE_WITHIN))
        await page(lambda p: expect(row(p, sensors[0])).to_have_class(re.compile("flash")))
        stored = await db.fetchval("SELECT version FROM sensor WHERE serial = $1", sensors[0])
        await page.screenshot("not-stored.png")
        await page.close()
    assert stored == "1.0.0"


async def test_counts_and_rows_are_marked_stale_when_the_daemon_stops(
    browser, aio_loop, database_url, settings, sensors
):
    """Stale, not gone: the rows stay (marked) when the page's refresh cannot reach the
    stopped daemon; before, they were replaced by "Could not load sensors"."""
    fixed = settings.replace(http_port=free_port())
    rows = "#sensor-table tbody tr[data-serial]"
    notice = "#sensor-notice"
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            running = await nursery.start(daemon.run, fixed, database_url)
            page = await open_dashboard(browser, fixed.http_port, "/#/?status=never")
            await page(
                lambda p: expect(p.locator("body")).not_to_have_attribute(
                    "data-stale", re.compile("")
                )
            )
            await report(running.grpc_port, sensors[0])  # a row leaves at the next refresh
            await page(lambda p: expect(p.locator(notice)).to_contain_text("1 leaving"))
            nursery.cancel_scope.cancel()
        as_of = re.compile(r"as of \d{2}:\d{2}:\d{2}")
        await page(lambda p: expect(p.locator("#connection")).to_contain_text(as_of))
        await page(lambda p: expect(p.locator("body")).to_have_attribute("data-stale", as_of))
        await page(lambda p: expect(p.locator("#summary .as-of")).to_be_visible())
        await page(lambda p: expect(p.locator("#sensors .as-of")).to_contain_text(as_of))
        # The chart and the catalogue are live too.
        headings = "#history-title-h .as-of, #software-title .as-of"
        await page(lambda p: expect(p.locator(headings)).to_have_text([as_of, as_of]))

        def refresh_fails(p: Any) -> None:
            with p.expect_event("requestfailed"):
                p.locator(notice).get_by_role("button").click()
            p.evaluate("() => new Promise((done) => setTimeout(done, 100))")  # its handler

        await page(refresh_fails)
        await page(lambda p: expect(p.locator(rows)).to_have_count(10))
        await page(lambda p: expect(p.locator("#sensor-table .error")).to_have_count(0))
        await page.screenshot("stale.png")
        await page.close()


async def test_an_operator_adds_sensors_by_csv_and_sees_their_site_uncovered(
    browser, running, sensors
):
    result = "#provision-result"
    with trio.fail_after(30):
        page = await open_dashboard(browser, running.http_port)
        await page(lambda p: p.get_by_text("Add sensors").first.click())
        csv = page.page.get_by_label("CSV with a header")
        # A blank line first: the refusal names the bad row by its line in the box (4).
        await page(lambda p: csv.fill("\nserial,site,label\nSN-1,north-gate,mast\nbad\u00e9,x,y"))
        await page(lambda p: p.get_by_role("button", name="Add sensors").click())
        nothing = re.compile("nothing was (stored|added)", re.IGNORECASE)
        await page(lambda p: expect(p.locator(result)).to_contain_text(nothing))
        await page(lambda p: expect(p.locator(result)).to_contain_text("line 4: "))
        await page(lambda p: csv.fill("serial,site,label\nSN-1,north-gate,mast\nSN-2,north-gate,"))
        await page(lambda p: p.get_by_role("button", name="Add sensors").click())
        await page(lambda p: expect(p.locator(result)).to_have_text("2 added, 0 already there."))
        site = page.page.locator('#sites li[data-site="north-gate"]')
        await page(lambda p: expect(site).to_contain_text("not covered"))
        await page(lambda p: expect(p.locator("#count-total")).to_have_text("12"))
        await page.screenshot("provisioned.png")
        await page(lambda p: site.get_by_role("link").click())
        rows = page.page.locator("#sensor-table tbody tr[data-serial]")
        await page(lambda p: expect(rows).to_have_count(2))
        url = await page(lambda p: p.url)
        await page.close()
    assert url.endswith("#/?site=north-gate")


async def test_the_software_panel_shows_versions_reported_but_never_uploaded(
    browser, running, sensors
):
    await report(running.grpc_port, sensors[0], "v4.0.0")
    with trio.fail_after(30):
        page = await open_dashboard(browser, running.http_port)
        unreleased = page.page.locator('#unreleased li[data-version="v4.0.0"]')
        await page(
            lambda p: expect(unreleased).to_contain_text(
                re.compile(r"v4\.0\.0 reported by sensors since \d{2}:\d{2}, not uploaded")
            )
        )
        await page.close()


# A page's read and the live changes race: a change that reaches the browser while the read
# is in flight may be newer than what the read returns, and must survive the read being drawn.
# These tests hold a read (its response fetched at once, so from before the change, and
# delivered only once the change's frame has arrived over /ws), as a slow database would.


class Held:
    """The first request `matches` accepts, held: its response is fetched when the request is
    made (`fresh`: when it is released instead) and delivered by `release`."""

    def __init__(self, matches: Callable[[str], bool], *, fresh: bool = False) -> None:
        self.matches = matches
        self.fresh = fresh
        self.held: list[tuple[Any, Any]] = []

    def install(self, p: Any) -> None:
        p.route(self.matches, self._hold)

    def _hold(self, route: Any) -> None:
        if self.held:
            route.fallback()
            return
        self.held.append((route, None if self.fresh else route.fetch()))

    def release(self, p: Any) -> None:
        route, response = self.held[0]
        route.fulfill(response=response or route.fetch())


MARK_ROWS_OLD = (
    "for (const tr of document.querySelectorAll('#sensor-table tbody tr')) tr.dataset.old = 1"
)


def _path_is(path: str) -> Callable[[str], bool]:
    return lambda url: urlsplit(url).path == path


def _until(done: Callable[[], bool], within: float) -> Callable[[Any], bool]:
    """A browser step: wait (letting Playwright deliver its events) until `done()`; whether it
    came within `within` seconds."""

    def wait(p: Any) -> bool:
        deadline = time.monotonic() + within
        while not done():
            if time.monotonic() > deadline:
                return False
            p.wait_for_timeout(20)
        return True

    return wait


async def _open_recording(browser: BrowserThread, port: int, path: str) -> tuple[Page, list[str]]:
    """The dashboard at `path` like `open_dashboard`, with every frame it receives over /ws."""
    page = await open_page(browser, f"http://127.0.0.1:{port}")
    frames: list[str] = []

    def record(p: Any) -> None:
        p.on("websocket", lambda ws: ws.on("framereceived", lambda data: frames.append(str(data))))
        p.goto(path)

    await page(record)
    await page(lambda p: expect(p.locator("#page-info")).to_contain_text("sensors"))
    await live(page)
    return page, frames


def _online(frames: list[str], serial: str) -> Callable[[], bool]:
    """Whether a `sensor` frame told that `serial` is online."""

    def arrived() -> bool:
        for frame in list(frames):
            message = json.loads(frame)
            if message["type"] == "sensor" and any(
                s["serial"] == serial and s["status"] == "online" for s in message["sensors"]
            ):
                return True
        return False

    return arrived


async def test_a_change_during_a_reload_outlives_the_older_read(browser, running, sensors):
    listing = Held(_path_is("/sensors"))
    with trio.fail_after(40):
        page, frames = await _open_recording(browser, running.http_port, "/")
        await page(listing.install)
        # The page reloads as after a resync or a refresh; its read is taken and held.
        await page(lambda p: p.evaluate("location.hash = '#/?page=1'"))
        assert await page(_until(lambda: bool(listing.held), 5))
        await report(running.grpc_port, sensors[2])
        arrived = await page(_until(_online(frames, sensors[2]), 5))
        # The rows drawn from the held read replace these: wait for them to be gone.
        await page(lambda p: p.evaluate(MARK_ROWS_OLD))
        await page(listing.release)
        await page(lambda p: expect(p.locator("#sensor-table tbody tr[data-old]")).to_have_count(0))
        await page(lambda p: expect(row(p, sensors[2]).locator(".badge")).to_have_text("online"))
        await page(lambda p: expect(p.locator("#count-online")).to_have_text("1"))
        await page.close()
    assert arrived


async def test_a_change_while_the_next_page_loads_is_shown_on_it(browser, running, sensors):
    listing = Held(_path_is("/sensors"))
    with trio.fail_after(40):
        page, frames = await _open_recording(browser, running.http_port, "/#/?limit=5")
        await page(lambda p: expect(row(p, sensors[4])).to_be_visible())
        await page(listing.install)
        await page(lambda p: p.get_by_role("button", name="Next").click())
        assert await page(_until(lambda: bool(listing.held), 5))
        # A sensor of the next page, which the page did not watch until it knew its rows.
        await report(running.grpc_port, sensors[7])
        arrived = await page(_until(_online(frames, sensors[7]), LIVE_WITHIN / 1000 * 2))
        await page(listing.release)
        await page(lambda p: expect(row(p, sensors[7])).to_be_visible())
        await page(lambda p: expect(row(p, sensors[7]).locator(".badge")).to_have_text("online"))
        await page.close()
    assert arrived  # the change came while the read was held, not after it was drawn


async def test_a_change_before_a_sensor_page_has_its_facts_is_shown(browser, running, sensors):
    serial = sensors[3]
    facts = Held(_path_is(f"/sensors/{serial}"))
    timeline = Held(_path_is(f"/sensors/{serial}/events"), fresh=True)
    with trio.fail_after(40):
        page, frames = await _open_recording(browser, running.http_port, "/")
        await page(facts.install)
        await page(timeline.install)
        await page(lambda p: p.evaluate(f"location.hash = '#/sensors/{serial}'"))
        assert await page(_until(lambda: bool(facts.held and timeline.held), 5))
        await live(page)
        await report(running.grpc_port, serial)
        arrived = await page(_until(_online(frames, serial), 5))
        # The facts were read before the report, the timeline after it: both say it once.
        await page(facts.release)
        await page(lambda p: expect(p.locator("#sensor-status")).to_have_text("online"))
        await page(timeline.release)
        first_report = page.page.locator(TIMELINE).filter(has_text="online (first report)")
        await page(lambda p: expect(first_report).to_have_count(1))
        await page(lambda p: expect(p.locator("#sensor-older")).to_be_hidden())
        await page(lambda p: expect(p.locator(TIMELINE)).to_have_count(1))
        await page.close()
    assert arrived


async def test_a_connection_gone_silent_is_marked_stale_without_waiting_for_its_close(
    browser, aio_loop, database_url, settings, sensors
):
    """A dead network answers nothing, not even the closing handshake (Chromium then waits up
    to a minute for it): once the server has been silent for a few ping intervals the page
    says it is not live, whether or not the socket has finished closing."""
    silent = threading.Event()

    def silence_after_hello(ws: Any) -> None:
        server = ws.connect_to_server()
        server.on_message(lambda message: None if silent.is_set() else ws.send(message))
        ws.on_message(server.send)
        ws.on_close(lambda code, reason: None)  # the page's close is never answered
        server.on_close(lambda code, reason: None)

    fixed = settings.replace(http_port=free_port(), ws_ping_interval=0.4)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run, fixed, database_url)
            page = await open_page(browser, f"http://127.0.0.1:{fixed.http_port}")
            await page(lambda p: p.route_web_socket("**/ws", silence_after_hello))
            await page(lambda p: p.goto("/"))
            await live(page)
            silent.set()
            await page(
                lambda p: expect(p.locator("#connection")).to_have_attribute(
                    "data-state", "reconnecting", timeout=5_000
                )
            )
            await page(
                lambda p: expect(p.locator("body")).to_have_attribute(
                    "data-stale", re.compile("as of")
                )
            )
            await page.close()
            nursery.cancel_scope.cancel()


async def test_skipping_to_the_list_keeps_its_filter(browser, running, sensors):
    """The skip link (for keyboards and screen readers) moves the focus; followed as a link,
    its `#sensors` was read as a list address and reset the filters."""
    page = await open_dashboard(browser, running.http_port, "/#/?status=never&sort=serial")
    with trio.fail_after(30):
        await page(lambda p: p.keyboard.press("Tab"))  # the first stop: the skip link
        await page(lambda p: expect(p.locator("a.skip")).to_be_focused())
        await page(lambda p: p.keyboard.press("Enter"))
        await page(lambda p: expect(p.locator("#sensors")).to_be_focused())
        hash_ = await page(lambda p: p.evaluate("location.hash"))
        await page(lambda p: expect(p.locator("#filter-status")).to_have_value("never"))
    await page.close()
    assert hash_ == "#/?status=never&sort=serial"


async def test_a_pause_while_typing_a_search_keeps_the_space_typed(browser, running, sensors):
    page = await open_dashboard(browser, running.http_port)
    search = "#filter-q"
    with trio.fail_after(30):
        await page(lambda p: p.locator(search).press_sequentially("north "))
        await page(lambda p: expect(p).to_have_url(re.compile(r"q=north(&|$)")))  # the pause
        await page(lambda p: p.locator(search).press_sequentially("gate"))
        await page(lambda p: expect(p).to_have_url(re.compile(r"q=north(\+|%20)gate")))
        await page(lambda p: expect(p.locator(search)).to_have_value("north gate"))
    await page.close()


async def test_a_sensor_already_in_the_list_is_not_announced_as_new(browser, running, sensors):
    """Sorted by status change with no filter, every transition moves a sensor within the list,
    none brings one into it (README: nothing is announced); a transition says what the sensor
    was before, and it matched then."""
    page = await open_dashboard(browser, running.http_port, "/#/?sort=status_changed_at&limit=1")
    with trio.fail_after(30):
        [shown] = await page(
            lambda p: p.locator("#sensors tbody tr").evaluate_all(
                "rows => rows.map(row => row.dataset.serial)"
            )
        )
        other = next(s for s in sensors if s != shown)
        async with grpclib_stub(running.grpc_port) as stub:  # one commit, one live message
            batch = [DeviceStatus(serial=s, software_version="") for s in (shown, other)]
            await aio(stub.send_status_batch, DeviceStatusBatch(statuses=batch))
        await page(
            lambda p: expect(row(p, shown).locator('[data-label="Status"]')).to_have_text("online")
        )
        # The row on the page moved (its key changed): that is said; nothing is new.
        notice = page.page.locator("#sensor-notice")
        await page(lambda p: expect(notice).to_contain_text("1 leaving"))
        await page(lambda p: expect(notice).not_to_contain_text("new"))
    await page.close()


async def test_a_search_typed_just_before_leaving_the_list_does_not_take_the_address(
    browser, running, sensors
):
    """The search waits a moment for more typing; leaving the list meanwhile (a row opened),
    its timer replaced the sensor's address with the list's. Timers on Playwright's clock."""
    page = await open_page(browser, f"http://127.0.0.1:{running.http_port}")
    sensor = f"#/sensors/{sensors[0]}"
    with trio.fail_after(30):
        await page(lambda p: p.clock.install())
        await page(lambda p: p.goto("/"))
        await live(page)
        await page(lambda p: p.locator("#filter-q").press_sequentially("x"))
        await page(lambda p: p.evaluate("hash => { location.hash = hash; }", sensor))
        await page(lambda p: expect(p.locator(SENSOR_READY[0])).to_contain_text(SENSOR_READY[1]))
        await page(lambda p: p.clock.run_for(2_000))  # past the search's wait
        await page(lambda p: expect(p.locator(SENSOR_READY[0])).to_be_visible())
        hash_ = await page(lambda p: p.evaluate("location.hash"))
    await page.close()
    assert hash_ == sensor


async def test_an_address_edited_with_a_bare_percent_opens_that_serial(browser, running, db):
    """`#/sensors/P%1` typed by hand: `%1` is no escape, so the serial is read as written."""
    await db.execute("INSERT INTO sensor (serial) VALUES ('P%1')")
    page = await open_dashboard(browser, running.http_port)
    with trio.fail_after(30):
        await page(lambda p: p.evaluate("() => { location.hash = '#/sensors/P%1'; }"))
        await page(lambda p: expect(p.locator(SENSOR_READY[0])).to_contain_text(SENSOR_READY[1]))
        await page(lambda p: expect(p.locator("#sensor-heading")).to_contain_text("P%1"))
    await page.close()


async def test_a_row_that_matches_again_is_no_longer_marked_leaving(browser, running, sensors):
    """Offline on an online page marks a row leaving; back online before the refresh, it
    stays: the mark (and its count) go."""
    serial = sensors[0]
    await report(running.grpc_port, serial)
    page = await open_dashboard(browser, running.http_port, "/#/?status=online")
    notice = page.page.locator("#sensor-notice")
    with trio.fail_after(30):
        now = datetime.now(UTC)
        offline = SensorState(1, serial, None, "offline", now, now)  # rows are matched by serial
        running.hub.publish([offline])
        await page(lambda p: expect(notice).to_contain_text("1 leaving"))
        running.hub.publish([dataclasses.replace(offline, status="online")])
        await page(lambda p: expect(notice).to_be_hidden())
        leaving = await page(lambda p: row(p, serial).get_attribute("data-leaving"))
    await page.close()
    assert leaving is None


async def test_a_search_pages_past_what_it_counts_and_a_page_past_the_end_shows_the_last(
    browser, running, db
):
    await seed.seed(db, 10_100)  # a search counts up to 10,000 matches
    rows = "#sensor-table tbody tr[data-serial]"
    info = "#page-info"
    with trio.fail_after(60):
        page = await open_dashboard(browser, running.http_port, "/#/?q=DS-&limit=200&page=50")
        await page(
            lambda p: expect(p.locator(info)).to_have_text(
                "Page 50 of at least 50 · at least 10,000 sensors"
            )
        )
        await page(
            lambda p: expect(p.get_by_role("button", name="Last", exact=True)).to_be_disabled()
        )
        await page(lambda p: p.get_by_role("button", name="Next").click())
        await page(lambda p: expect(p.locator(rows)).to_have_count(100))
        await page(lambda p: expect(p.locator(rows).first).to_contain_text("DS-00010001"))
        await page(
            lambda p: expect(p.locator(info)).to_have_text("Page 51 · at least 10,000 sensors")
        )
        await page(lambda p: expect(p.get_by_role("button", name="Next")).to_be_disabled())
        assert "cursor=" in await page(lambda p: p.url)  # a deep link to it, as to any page
        await page(lambda p: p.reload())
        await page(lambda p: expect(p.locator(rows).first).to_contain_text("DS-00010001"))
        await page(lambda p: p.get_by_role("button", name="Previous").click())
        await page(lambda p: expect(p.locator(rows).first).to_contain_text("DS-00009801"))

        await page(lambda p: p.goto(f"{page.base_url}/#/?q=DS-&limit=200&page=99999"))
        await page(
            lambda p: expect(p.locator(info)).to_have_text(
                "Page 50 of at least 50 · at least 10,000 sensors"
            )
        )
        await page(lambda p: p.goto(f"{page.base_url}/#/?page=99999"))
        await page(
            lambda p: expect(p.locator(info)).to_have_text("Page 202 of 202 · 10,100 sensors")
        )
        await page(lambda p: expect(p.locator(rows).first).to_contain_text("DS-00010051"))
        await page.close()
