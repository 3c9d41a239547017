"""Operators' writes reach live views: a sensor retired, restored, provisioned or given another
site or label is sent to the `/ws` clients that watch it or whose filter it enters, and the fleet
totals follow. Real daemon, real HTTP client (httpx) and WebSocket client (trio-websocket)."""

from __future__ import annotations

import trio

from .support.live_client import LiveClient, open_live


async def _summary_with(client: LiveClient, total: int) -> dict:
    """The first `summary` whose total is `total` (they come at most once a second)."""
    while (summary := await client.next("summary"))["total"] != total:
        pass
    return summary


async def _sensor(client: LiveClient, serial: str) -> dict:
    """The next live item of `serial`."""
    while True:
        message = await client.next("sensor")
        for item in message["sensors"]:
            if item["serial"] == serial:
                return item


async def test_a_retired_sensor_on_a_filtered_page_is_sent_marked_and_totals_drop(
    running, api, sensors
):
    with trio.fail_after(15):
        async with open_live(running.http_port) as client:
            await client.subscribe(sensors[:3], where={"status": "never"})
            await _summary_with(client, len(sensors))
            assert (await api.delete(f"/sensors/{sensors[1]}")).status_code == 204
            item = await _sensor(client, sensors[1])
            summary = await _summary_with(client, len(sensors) - 1)
            page = (await api.get("/sensors", params={"status": "never"})).json()
    assert (item["retired"], item["status"], item["heartbeat"]) == (True, "never", False)
    assert "label" in item  # an operator's change carries the label
    assert summary["never"] == len(sensors) - 1
    assert page["total"] == summary["never"]
    assert sensors[1] not in [i["serial"] for i in page["items"]]


async def test_a_site_change_reaches_the_page_it_leaves_and_the_filter_it_enters(
    running, api, sensors
):
    with trio.fail_after(15):
        async with open_live(running.http_port) as north, open_live(running.http_port) as south:
            await api.patch(f"/sensors/{sensors[0]}", json={"site": "north"})
            await north.subscribe([sensors[0]], where={"site": "north"})
            await south.subscribe(where={"site": "south"})
            changed = await api.patch(
                f"/sensors/{sensors[0]}", json={"site": "south", "label": "Mast 7"}
            )
            left = await _sensor(north, sensors[0])
            entered = await _sensor(south, sensors[0])
    assert changed.status_code == 200
    assert (left["site"], left["label"], left["retired"]) == ("south", "Mast 7", False)
    assert entered == left


async def test_a_retired_page_sees_sensors_retired_and_restored(running, api, sensors):
    with trio.fail_after(15):
        async with open_live(running.http_port) as retired, open_live(running.http_port) as fleet:
            await retired.subscribe([sensors[0]], where={"status": "retired"})
            await fleet.subscribe(where={"q": "mast"})
            await api.delete(f"/sensors/{sensors[0]}")
            await api.delete(f"/sensors/{sensors[1]}")
            gone = await _sensor(retired, sensors[1])  # entered the retired list
            restored = await api.post(
                "/sensors", json={"sensors": [{"serial": sensors[0], "label": "Mast 1"}]}
            )
            back = await _sensor(retired, sensors[0])  # on screen: leaves the retired list
            found = await _sensor(fleet, sensors[0])  # its new label matches the search
    assert gone["retired"] is True
    assert restored.json() == {"created": 1, "existing": 0}
    assert (back["retired"], back["label"]) == (False, "Mast 1")
    assert found == back


async def test_provisioned_sensors_enter_the_filters_they_match(running, api):
    with trio.fail_after(15):
        async with open_live(running.http_port) as client:
            await client.subscribe([], where={"site": "east"})
            await api.post(
                "/sensors",
                json={
                    "sensors": [
                        {"serial": "W-1", "site": "west"},
                        {"serial": "E-1", "site": "east"},
                    ]
                },
            )
            [item] = (await client.next("sensor"))["sensors"]
    assert (item["serial"], item["site"], item["status"], item["label"]) == (
        "E-1",
        "east",
        "never",
        None,
    )
