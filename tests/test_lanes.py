"""Lane placement (pure): one lane takes everything until reports wait in it; a lane whose
commit is held up gets no new sensors; a sensor with a report in flight stays in the lane that
holds it, so its reports keep their order."""

from __future__ import annotations

import pytest

from droneshield.lanes import HELD_AFTER, HELD_REMEMBER, LanePlacement

NOW = 100.0


def test_the_first_lane_takes_every_sensor_until_reports_wait_in_it():
    lanes = LanePlacement(3, spill_at=4)
    assert [lanes.place(f"s{i}", NOW) for i in range(6)] == [0, 0, 0, 0, 1, 1]
    assert lanes.waiting == [4, 2, 0, 0]  # the last: the side lane
    lanes.taken(0, 4, NOW)  # the first lane took its four into a batch: room for four more
    assert [lanes.place(f"t{i}", NOW) for i in range(5)] == [0, 0, 0, 0, 1]


def test_with_every_lane_behind_a_new_sensor_goes_where_fewest_wait():
    lanes = LanePlacement(3, spill_at=2)
    assert [lanes.place(f"s{i}", NOW) for i in range(6)] == [0, 0, 1, 1, 2, 2]
    assert [lanes.place(c, NOW) for c in "abc"] == [0, 1, 2]
    lanes.taken(1, 2, NOW)  # the second lane is down to one waiting (b)
    assert lanes.place("new", NOW) == 1
    assert lanes.place("next", NOW) == 1  # 2, 3 and 3 waiting: still the fewest


def test_a_lane_committing_for_longer_than_held_after_gets_no_new_sensor():
    lanes = LanePlacement(2, spill_at=4)
    assert lanes.place("locked", NOW) == 0
    lanes.taken(0, 1, NOW)
    assert lanes.place("a", NOW + HELD_AFTER / 2) == 0  # a commit of usual length
    assert lanes.place("b", NOW + HELD_AFTER * 2) == 1  # held: new sensors go elsewhere
    assert lanes.place("a", NOW + HELD_AFTER * 2) == 0  # but a's report waits in lane 0
    lanes.finished(0, ["locked"])  # answered at last: the lane is free again
    assert lanes.place("c", NOW + HELD_AFTER * 3) == 0


def test_with_every_lane_held_a_new_sensor_goes_where_fewest_wait():
    lanes = LanePlacement(2, spill_at=1)
    assert lanes.place("x", NOW) == 0
    lanes.taken(0, 1, NOW)
    assert [lanes.place("y", NOW), lanes.place("z", NOW)] == [0, 1]
    lanes.taken(1, 1, NOW)  # both lanes commit since NOW; y waits in lane 0
    assert lanes.place("w", NOW + HELD_AFTER * 2) == 1


def test_a_sensor_stays_in_its_lane_while_a_report_of_it_is_in_flight():
    lanes = LanePlacement(2, spill_at=1)
    assert lanes.place("a", NOW) == 0
    assert "a" in lanes
    assert lanes.place("b", NOW) == 1  # the first lane is behind: b goes to the second
    lanes.taken(0, 1, NOW)
    assert lanes.place("b", NOW) == 1  # the first has room again, but b's report is in lane 1
    assert lanes.waiting == [0, 2, 0]
    lanes.taken(1, 2, NOW)
    lanes.finished(1, ["b"])  # one of b's two reports is answered: the other is still in lane 1
    assert lanes.place("b", NOW) == 1
    lanes.taken(1, 1, NOW)
    lanes.finished(1, ["b", "b"])
    assert "b" not in lanes
    assert lanes.place("b", NOW) == 0  # none in flight: b goes where there is room
    assert lanes.in_flight() == 2  # a (committing in lane 0) and b


def test_a_report_its_lane_never_got_is_taken_back():
    lanes = LanePlacement(2, spill_at=1)
    assert [lanes.place("a", NOW), lanes.place("a", NOW)] == [0, 0]
    lanes.unplace("a")
    assert (lanes.waiting, lanes.in_flight()) == ([1, 0, 0], 1)
    lanes.unplace("a")
    assert (lanes.waiting, lanes.in_flight(), "a" in lanes) == ([0, 0, 0], 0, False)


@pytest.mark.parametrize(("lanes", "spill_at"), [(0, 1), (1, 0)])
def test_lanes_and_the_spill_point_are_positive(lanes, spill_at):
    with pytest.raises(ValueError, match="must be positive"):
        LanePlacement(lanes, spill_at=spill_at)


def test_a_sensor_set_apart_goes_to_the_side_lane_until_its_row_is_free_or_time_passes():
    """A lane found a sensor's row held: its reports in flight follow it to the side lane
    (the lane passes them on), and its next ones go there directly, never to a regular lane,
    until the side lane commits one or HELD_REMEMBER passes."""
    lanes = LanePlacement(2, spill_at=4)
    assert [lanes.place(s, NOW) for s in ("held", "a", "held")] == [0, 0, 0]
    lanes.taken(0, 3, NOW)
    lanes.set_apart("held", NOW)
    assert lanes.apart.keys() == {"held"}
    lanes.passed_on(2)  # its two reports
    lanes.finished(0, ["a"])
    assert lanes.waiting == [0, 0, 2]
    assert lanes.place("held", NOW) == 0  # in flight still (the side lane took them from 0)
    lanes.taken(0, 1, NOW)
    lanes.passed_on(1)  # so lane 0 passes this one on too
    lanes.finished(0, [])
    lanes.taken(lanes.side_lane, 3, NOW)
    lanes.finished(lanes.side_lane, ["held", "held", "held"])
    assert "held" not in lanes
    assert lanes.place("held", NOW + 1) == lanes.side_lane  # none in flight: straight there
    lanes.taken(lanes.side_lane, 1, NOW + 1)
    lanes.freed(["held"])  # the side lane committed it: the row is free
    lanes.finished(lanes.side_lane, ["held"])
    assert lanes.place("held", NOW + 2) == 0
    assert "held" not in lanes.apart


def test_a_sensor_set_apart_returns_to_the_regular_lanes_after_held_remember():
    lanes = LanePlacement(2, spill_at=4)
    lanes.place("held", NOW)
    lanes.set_apart("held", NOW)
    lanes.finished(0, ["held"])  # answered (its deadline passed, say)
    assert lanes.place("held", NOW + HELD_REMEMBER / 2) == lanes.side_lane
    lanes.finished(lanes.side_lane, ["held"])
    assert lanes.place("held", NOW + HELD_REMEMBER * 2) == 0
