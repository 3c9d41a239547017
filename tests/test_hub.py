"""The hub and the WebSocket message checks as pure logic (no sockets)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import orjson
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from droneshield.domain import Edit, SensorState
from droneshield.hub import Hub, Latest
from droneshield.web import messages
from droneshield.web.messages import Pong, ProtocolError, Subscribe

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def change(n: int, status: str = "online", version: str | None = "1.0.0") -> SensorState:
    return SensorState(n, f"S-{n}", version, status, NOW, NOW)  # type: ignore[arg-type]


def test_subscription_keeps_only_the_latest_state_per_sensor():
    hub = Hub()
    with hub.subscribe(["S-1", "S-2"]) as sub:
        hub.publish([change(1, version="1.0.0"), change(3), change(1, version="2.0.0")])
        assert sub.take() == [change(1, version="2.0.0")]
        assert sub.take() == []


def test_overflow_drops_pending_and_flags_a_resync():
    hub = Hub()
    with hub.subscribe(None, max_pending=3) as sub:
        hub.publish(change(n) for n in range(10))
        assert sub.overflowed
        assert sub.pending == 0
        assert sub.take() == []
        assert not sub.overflowed


def test_resubscribe_drops_pending_changes_of_sensors_no_longer_watched():
    hub = Hub()
    with hub.subscribe(["S-1", "S-2"]) as sub:
        hub.publish([change(1), change(2)])
        hub.resubscribe(sub, ["S-2"])
        hub.publish([change(1)])
        assert sub.take() == [change(2)]


def test_match_narrows_a_subscription_to_everything():
    hub = Hub()
    with hub.subscribe(None, match=lambda c: c.status == "offline") as sub:
        hub.publish([change(1), change(2, "offline")])
        assert sub.take() == [change(2, "offline")]


def test_serials_and_match_watch_a_page_and_what_enters_its_filter():
    hub = Hub()
    offline = lambda c: c.status == "offline"  # noqa: E731
    with hub.subscribe(["S-1"], match=offline) as sub:
        hub.publish([change(1), change(2), change(3, "offline")])
        assert sub.take() == [change(1), change(3, "offline")]
        hub.publish([change(3, "offline"), change(1)])
        hub.resubscribe(sub, ["S-4"], match=offline)  # keeps what still enters the filter
        hub.publish([change(4)])
        assert sub.take() == [change(3, "offline"), change(4)]
        hub.resubscribe(sub, ["S-4"])  # the filter dropped: the page only
        hub.publish([change(5, "offline")])
        assert sub.take() == []


def test_page_subscription_with_a_filter_ignores_heartbeats_of_other_sensors():
    parsed = messages.parse(
        messages.encode({"type": "subscribe", "serials": ["S-1"], "filter": {"site": "north"}})
    )
    assert isinstance(parsed, Subscribe)
    assert parsed.serials == {"S-1"}
    assert parsed.match is not None
    north = replace(change(2), site="north")
    assert parsed.match(north)
    assert not parsed.match(replace(north, heartbeat=True))
    assert not parsed.match(replace(change(3), site="south"))


def test_outbox_collects_local_changes_but_not_remote_ones():
    hub = Hub()
    with hub.outbox() as box, hub.subscribe(["S-1", "S-2"]) as sub:
        hub.publish([change(1)])
        hub.publish_remote([change(2)])
        assert box.take() == [change(1)]
        assert sub.take() == [change(1), change(2)]


def test_resync_all_reaches_every_subscription_but_no_outbox():
    hub = Hub()
    with hub.outbox() as box, hub.subscribe(()) as idle, hub.subscribe(["S-1"]) as watching:
        hub.publish([change(1)])
        hub.resync_all()
        assert idle.overflowed
        assert watching.overflowed
        assert box.take() == [change(1)]
        assert hub.subscribers == 2


async def test_latest_gives_followers_only_the_newest_value():
    latest: Latest[int] = Latest()
    seen = []

    async def follow() -> None:
        version = 0
        while len(seen) < 2:
            version, value = await latest.wait_newer(version)
            seen.append(value)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            with latest.watch():
                nursery.start_soon(follow)
                await trio.testing.wait_all_tasks_blocked()
                latest.set(1)
                latest.set(1)  # unchanged: no news
                await trio.testing.wait_all_tasks_blocked()
                latest.set(2)
                latest.set(3)  # 2 was never looked at: the follower sees 3 only
    assert seen == [1, 3]
    assert latest.watchers == 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)
subscribe_like = st.fixed_dictionaries(
    {"type": st.just("subscribe")},
    optional={"serials": json_values, "filter": json_values},
).map(messages.encode)


@given(st.one_of(st.binary(max_size=200), st.text(max_size=200), subscribe_like))
def test_parse_accepts_or_refuses_with_a_protocol_error_never_a_crash(data):
    try:
        parsed = messages.parse(data)
    except ProtocolError as exc:
        refusal = exc
        parsed = None
    else:
        refusal = None
    assert isinstance(parsed, Subscribe | Pong) or (refusal.code and refusal.message)


def test_past_the_bound_the_oldest_tenth_of_reported_versions_is_forgotten_at_once(monkeypatch):
    monkeypatch.setattr("droneshield.hub.REPORTED_MAX", 20)
    hub = Hub()
    hub.publish([replace(change(n), reported_version="4.0.0") for n in range(1, 22)])
    remembered = [n for n in range(1, 22) if hub.reported_version(n) is not None]
    assert remembered == list(range(3, 22))  # at 20: sensors 1 and 2 go together, 21 comes in


@pytest.mark.parametrize(
    ("where", "accepted"),
    [
        ({}, {1, 2, 3}),
        ({"status": "offline"}, {2, 3}),
        ({"version": "v2.0.0"}, {3}),
        ({"q": "S-1"}, {1}),
        ({"q": "s-"}, {1, 2, 3}),  # any case, anywhere
        ({"q": "-3"}, {3}),
    ],
)
def test_filter_subscription_matches_like_the_sensor_list(where, accepted):
    parsed = messages.parse(messages.encode({"type": "subscribe", "filter": where}))
    assert isinstance(parsed, Subscribe)
    assert parsed.match is not None
    pool = [change(1), change(2, "offline"), change(3, "offline", "2.0.0")]
    assert {c.id for c in pool if parsed.match(c)} == accepted


def test_heartbeats_are_wanted_of_watched_serials_unless_a_view_takes_every_sensor():
    """The writer builds a change for a heartbeat only when some view may take it: a page
    with a filter takes its own serials' heartbeats and only transitions of the others (it
    once made every heartbeat of the fleet be built)."""
    hub = Hub()
    offline = lambda change: change.status == "offline"  # noqa: E731
    with hub.subscribe(["S-1"], match=offline) as page:
        assert hub.wants_heartbeat("S-1")
        assert not hub.wants_heartbeat("S-2")
        assert hub.wants("S-2")  # a transition of S-2 may enter the page's filter
        hub.resubscribe(page, None, match=offline)
        assert hub.wants_heartbeat("S-2")  # a filter without serials: any sensor
    assert not hub.wants_heartbeat("S-1")


def test_interest_is_what_subscriptions_watch_and_changes_are_counted():
    hub = Hub()
    assert hub.interest() == (False, set())
    version = hub.interest_version
    with hub.subscribe(["DS-1", "DS-2"]), hub.subscribe(["DS-2"]) as second:
        assert hub.interest()[0] is False
        assert set(hub.interest()[1]) == {"DS-1", "DS-2"}
        hub.resubscribe(second, None, match=lambda change: change.online)
        assert hub.interest()[0] is True  # a filter may match any sensor's heartbeat
        assert hub.interest_version > version
        # A live view (serials and a filter): its filter admits transitions only, which are
        # always relayed, so it needs the heartbeats of its serials alone.
        hub.resubscribe(second, ["DS-3"], match=lambda change: change.online)
        assert hub.interest()[0] is False
        assert set(hub.interest()[1]) == {"DS-1", "DS-2", "DS-3"}
    assert hub.interest() == (False, set())
    with hub.outbox():
        assert hub.interest() == (False, set())  # the relay's own outbox watches nothing


def test_reported_versions_are_remembered_until_a_stored_one_or_retirement_bounded(monkeypatch):
    monkeypatch.setattr("droneshield.hub.REPORTED_MAX", 2)
    hub = Hub()
    unstored = [replace(change(n), reported_version="4.0.0") for n in (1, 2, 3)]
    hub.publish(unstored[:2])
    hub.publish_remote([change(2, status="offline")])  # an expiry says nothing of versions
    hub.publish([replace(change(1), edit=Edit("Mast 1"))])  # nor does a new label
    assert [hub.reported_version(n) for n in (1, 2)] == ["4.0.0", "4.0.0"]
    hub.publish([unstored[2]])  # one too many: the oldest is forgotten
    assert [hub.reported_version(n) for n in (1, 2, 3)] == [None, "4.0.0", "4.0.0"]
    hub.publish([change(2), replace(change(3, status="offline"), edit=Edit(None, retired=True))])
    assert [hub.reported_version(n) for n in (2, 3)] == [None, None]


@pytest.mark.parametrize(
    ("where", "accepted"),
    [
        ({}, ["S-1", "S-2"]),
        ({"status": "retired"}, ["S-3"]),
        ({"q": "mast"}, ["S-2"]),
        ({"status": "never", "q": "s-"}, ["S-1"]),
    ],
)
def test_filters_leave_retired_sensors_to_the_retired_filter_and_search_labels(where, accepted):
    sensors = [
        SensorState(1, "S-1", None, "never", None, None),
        SensorState(2, "S-2", None, "online", NOW, NOW, edit=Edit("Mast 2")),
        SensorState(3, "S-3", None, "offline", NOW, NOW, edit=Edit("Mast 3", retired=True)),
    ]
    match = messages.parse(orjson.dumps({"type": "subscribe", "filter": where})).match
    assert match is not None
    assert [s.serial for s in sensors if match(s)] == accepted
