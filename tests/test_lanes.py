"""Lane placement (pure): one lane takes everything until it falls behind; a sensor with a
report in flight stays in the lane that holds it, so its reports keep their order."""

from __future__ import annotations

import pytest

from droneshield.lanes import LanePlacement


def test_the_first_lane_takes_every_sensor_until_reports_wait_in_it():
    lanes = LanePlacement(3, spill_at=4)
    assert [lanes.place(f"s{i}") for i in range(4)] == [0, 0, 0, 0]
    assert lanes.waiting == [4, 0, 0]
    lanes.taken(0, 4)  # the lane took them into a batch: it commits, the next ones wait
    assert [lanes.place(f"t{i}") for i in range(6)] == [0, 0, 0, 0, 1, 1]


def test_behind_everywhere_a_new_sensor_goes_where_fewest_wait():
    lanes = LanePlacement(3, spill_at=2)
    assert [lanes.place(f"s{i}") for i in range(6)] == [0, 0, 1, 1, 2, 2]
    lanes.taken(1, 2)
    assert lanes.place("new") == 1
    lanes.taken(0, 1)
    assert [lanes.place("a"), lanes.place("b")] == [0, 1]


def test_a_sensor_stays_in_its_lane_while_a_report_of_it_is_in_flight():
    lanes = LanePlacement(2, spill_at=1)
    assert lanes.place("a") == 0
    assert "a" in lanes
    assert lanes.place("b") == 1  # the first lane is behind: b goes to the second
    lanes.taken(0, 1)
    assert lanes.place("b") == 1  # the first has room again, but b's report waits in lane 1
    assert lanes.waiting == [0, 2]
    lanes.taken(1, 2)
    lanes.done(["b"])  # one of b's two reports is answered: the other is still in lane 1
    assert lanes.place("b") == 1
    lanes.taken(1, 1)
    lanes.done(["b", "b"])
    assert lanes.place("b") == 0  # none in flight: b goes where there is room
    assert len(lanes) == 2  # a (committing in lane 0) and b


def test_done_frees_the_sensor():
    lanes = LanePlacement(2, spill_at=1)
    lanes.place("a")
    lanes.taken(0, 1)
    lanes.done(["a"])
    assert "a" not in lanes
    assert len(lanes) == 0
    assert lanes.waiting == [0, 0]


def test_a_report_its_lane_never_got_is_taken_back():
    lanes = LanePlacement(2, spill_at=1)
    assert lanes.place("a") == 0
    assert lanes.place("a") == 0
    lanes.unplace("a")
    assert lanes.waiting == [1, 0]
    lanes.unplace("a")
    assert (len(lanes), lanes.waiting) == (0, [0, 0])


@pytest.mark.parametrize(("lanes", "spill_at"), [(0, 1), (1, 0)])
def test_lanes_and_the_spill_point_are_positive(lanes, spill_at):
    with pytest.raises(ValueError, match="must be positive"):
        LanePlacement(lanes, spill_at=spill_at)
