"""The timing wheel on its own: plain numbers for `now`, and a hypothesis model of it."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from droneshield.wheel import TimingWheel


def _drain(wheel: TimingWheel, now: float) -> list[int]:
    return [key for batch in wheel.expired(now) for key in batch]


def test_key_expires_at_the_first_tick_at_or_after_its_deadline():
    wheel = TimingWheel(resolution=1.0, span=30.0, now=0.0)
    wheel.arm(7, 30.2)
    assert _drain(wheel, 30.2) == []
    assert _drain(wheel, 30.99) == []
    assert _drain(wheel, 31.0) == [7]
    assert len(wheel) == 0
    assert 7 not in wheel


def test_rearm_moves_the_deadline_later_but_never_earlier():
    wheel = TimingWheel(resolution=1.0, span=30.0, now=0.0)
    wheel.arm(1, 30.0)
    wheel.arm(1, 40.0)
    wheel.arm(1, 35.0)
    assert _drain(wheel, 39.0) == []
    assert _drain(wheel, 40.0) == [1]


def test_cancelled_key_never_expires_and_can_be_armed_again():
    wheel = TimingWheel(resolution=1.0, span=30.0, now=0.0)
    wheel.arm(1, 10.0)
    wheel.cancel(1)
    assert len(wheel) == 0
    assert _drain(wheel, 20.0) == []
    wheel.arm(1, 25.0)
    assert _drain(wheel, 24.0) == []
    assert _drain(wheel, 25.0) == [1]


def test_deadline_beyond_the_span_still_expires_on_time():
    wheel = TimingWheel(resolution=1.0, span=5.0, now=0.0)
    wheel.arm(1, 23.0)
    for now in range(23):
        assert _drain(wheel, float(now)) == []
    assert _drain(wheel, 23.0) == [1]


def test_late_poll_returns_everything_due_in_deadline_order():
    wheel = TimingWheel(resolution=1.0, span=10.0, now=0.0)
    for key, deadline in [(1, 9.0), (2, 3.0), (3, 250.0), (4, 120.0), (5, 0.5)]:
        wheel.arm(key, deadline)
    assert [list(b) for b in wheel.expired(200.0)] == [[5, 2, 1, 4]]
    assert _drain(wheel, 250.0) == [3]


def test_overdue_arms_come_first_ordered_by_deadline():
    wheel = TimingWheel(resolution=1.0, span=30.0, now=100.0)
    wheel.arm(10, 130.0)
    wheel.arm_many([1, 2], 60.0)
    wheel.arm(3, 40.0)
    assert list(wheel.expired(130.0)) == [[3, 1, 2], [10]]


def test_keys_armed_between_batches_are_not_lost():
    wheel = TimingWheel(resolution=1.0, span=30.0, now=0.0)
    wheel.arm(1, 1.0)
    wheel.arm(2, 2.0)
    batches = wheel.expired(5.0)
    assert next(batches) == [1]
    wheel.arm(3, 0.0)  # already overdue while the pass is under way
    wheel.arm(2, 10.0)  # re-armed before its tick is reached in this pass
    assert list(batches) == []
    assert _drain(wheel, 5.0) == [3]
    assert _drain(wheel, 10.0) == [2]


def test_next_tick_at_is_the_boundary_after_the_last_poll():
    wheel = TimingWheel(resolution=0.1, span=3.0, now=0.0)
    _drain(wheel, 0.75)
    at = wheel.next_tick_at()
    assert 0.75 < at <= 0.8 + 1e-12
    assert math.floor(at / 0.1) == 8


@pytest.mark.parametrize(("resolution", "span"), [(0.0, 1.0), (1.0, -1.0)])
def test_non_positive_resolution_or_span_is_refused(resolution, span):
    with pytest.raises(ValueError, match="positive"):
        TimingWheel(resolution=resolution, span=span, now=0.0)


# Times are multiples of 1/8 and resolutions powers of two, so float arithmetic is exact and
# the model can state the contract directly: due iff deadline <= floor(now / res) * res.
EIGHTHS = st.integers(min_value=-80, max_value=400).map(lambda n: n / 8)
KEYS = st.integers(min_value=0, max_value=15)


class WheelAgainstDict(RuleBasedStateMachine):
    """The wheel must behave like a dict of deadlines with `max` on re-arm."""

    @initialize(
        resolution=st.sampled_from([0.25, 0.5, 1.0, 2.0]),
        span=st.sampled_from([0.5, 1.0, 3.0, 10.0]),
        start=EIGHTHS,
    )
    def start(self, resolution: float, span: float, start: float) -> None:
        self.now = start
        self.resolution = resolution
        self.wheel = TimingWheel(resolution, span, start)
        self.model: dict[int, float] = {}

    def _arm(self, key: int, deadline: float) -> None:
        self.model[key] = max(self.model.get(key, -math.inf), deadline)

    @rule(key=KEYS, delay=EIGHTHS)
    def arm(self, key: int, delay: float) -> None:
        self.wheel.arm(key, self.now + delay)
        self._arm(key, self.now + delay)

    @rule(keys=st.lists(KEYS, max_size=6), delay=EIGHTHS)
    def arm_many(self, keys: list[int], delay: float) -> None:
        self.wheel.arm_many(keys, self.now + delay)
        for key in keys:
            self._arm(key, self.now + delay)

    @rule(key=KEYS)
    def cancel(self, key: int) -> None:
        self.wheel.cancel(key)
        self.model.pop(key, None)

    def _due(self) -> set[int]:
        boundary = math.floor(self.now / self.resolution) * self.resolution
        return {k for k, d in self.model.items() if d <= boundary}

    def _check_expired(self, passes: list[list[int]], due: set[int]) -> None:
        """`passes`: what successive `expired` calls returned, each in deadline order."""
        got = [k for keys in passes for k in keys]
        assert len(got) == len(set(got)), "a key expired twice"
        assert set(got) == due
        for keys in passes:
            ticks = [math.ceil(self.model[k] / self.resolution) for k in keys]
            assert ticks == sorted(ticks), "not in deadline order"
        for key in got:
            assert self.model[key] <= self.now, "expired before its deadline"
            del self.model[key]
        assert all(d > self.now - self.resolution for d in self.model.values()), "too late"

    @rule(step=st.integers(min_value=0, max_value=200).map(lambda n: n / 8))
    def advance(self, step: float) -> None:
        self.now += step
        self._check_expired([_drain(self.wheel, self.now)], self._due())

    @rule(step=st.integers(min_value=0, max_value=40).map(lambda n: n / 8), key=KEYS, delay=EIGHTHS)
    def advance_arming_mid_pass(self, step: float, key: int, delay: float) -> None:
        self.now += step
        due_before = self._due()
        batches = self.wheel.expired(self.now)
        first = next(batches, [])
        self.wheel.arm(key, self.now + delay)
        rest = [k for batch in batches for k in batch]
        again = _drain(self.wheel, self.now)
        # Order is promised among keys armed before the call, so `key` is checked on its own.
        others, mine = [k for k in rest if k != key], [k for k in rest if k == key]
        if key in first:  # it expired in this pass, then was armed afresh
            self._check_expired([first, others], due_before)
            self.model[key] = self.now + delay
            self._check_expired([mine, again], self._due())
        else:
            self._arm(key, self.now + delay)
            self._check_expired([first + others, mine, again], self._due())

    @invariant()
    def same_keys(self) -> None:
        if hasattr(self, "wheel"):
            assert len(self.wheel) == len(self.model)
            assert all((k in self.wheel) == (k in self.model) for k in range(16))


TestWheelAgainstDict = WheelAgainstDict.TestCase
TestWheelAgainstDict.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)


@given(
    deadlines=st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=300),
    poll=st.integers(min_value=1, max_value=50),
)
def test_polling_every_few_ticks_expires_each_key_once_in_order(deadlines, poll):
    wheel = TimingWheel(resolution=1.0, span=30.0, now=0.0)
    for key, deadline in enumerate(deadlines):
        wheel.arm(key, float(deadline))
    seen: list[int] = []
    for now in range(0, 10_000 + poll, poll):
        seen += _drain(wheel, float(now))
    assert sorted(seen) == list(range(len(deadlines)))
    assert [deadlines[k] for k in seen] == sorted(deadlines)
