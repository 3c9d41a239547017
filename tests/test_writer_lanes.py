"""Writer lanes: lanes that commit side by side on connections of their own, the first taking
every sensor until reports wait in it (lanes.py). A sensor's reports keep their order as they
move between lanes, a lane held by a row lock holds only what waits in it, a lane that fails
fails only its own reports, shutdown drains every lane, and a report is acknowledged only once
its lane has committed it (real PostgreSQL)."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.lowlevel
import trio.testing
from prometheus_client import REGISTRY

import droneshield.lanes
import droneshield.writer
from droneshield import daemon
from droneshield.config import Settings
from droneshield.db import seed
from droneshield.db.pool import Connection, connect, open_pool
from droneshield.db.reports import Applied, limit_lock_wait
from droneshield.errors import DroneshieldError, IngestUnavailable
from droneshield.lanes import SPILL_AT
from droneshield.reports import SHUTTING_DOWN, Outcome, Pending
from droneshield.writer import LOCK_WAIT, SPLITS_MAX, Writer

from .support.grpc_clients import send_batch
from .support.locks import another_waits_for_a_lock, cancel_lock_waiters
from .support.processes import eventually
from .support.releases import add_software

LANES = 3
BATCH_MAX = 7  # small batches: many commits per lane; and 7 waiting in a lane spill to the next
ACK_TIMEOUT = 10.0  # seconds


class Lanes:
    """A writer with LANES lanes on its own pool and queue, and every report's outcomes."""

    def __init__(self, send: trio.MemorySendChannel[Pending], writer: Writer) -> None:
        self.send = send
        self.writer = writer
        self.outcomes: dict[int, list[Outcome]] = defaultdict(list)  # report number → outcomes
        self.resolved = trio.Event()  # set (and renewed) whenever a report is resolved
        self.stopped = trio.Event()
        self._scope = trio.CancelScope()
        self._count = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self._scope:
            await self.writer.run(task_status=task_status)
        self.stopped.set()

    def cancel(self) -> None:
        """Cancel the writer, as the daemon's shutdown does (it returns once `stopped`)."""
        self._scope.cancel()

    async def stop(self) -> None:
        """`cancel`, and wait until the writer has returned."""
        self.cancel()
        await self.stopped.wait()

    def report(self, serial: str, version: str | None = None) -> Pending:
        number = self._count
        self._count += 1

        def resolve(outcome: Outcome) -> None:
            self.outcomes[number].append(outcome)
            self.resolved.set()
            self.resolved = trio.Event()

        return Pending(serial, version, None, trio.current_time() + ACK_TIMEOUT, resolve)

    async def until(self, done: Callable[[], bool]) -> None:
        while not done():
            await self.resolved.wait()


@asynccontextmanager
async def _running(
    database_url: str, shutdown_grace: float, lock_wait: float = LOCK_WAIT
) -> AsyncIterator[Lanes]:
    async with open_pool(database_url, size=LANES + 1) as pool, trio.open_nursery() as nursery:
        send, receive = trio.open_memory_channel[Pending](10_000)
        writer = Writer(
            pool,
            receive,
            lanes=LANES,
            batch_max=BATCH_MAX,
            shutdown_grace=shutdown_grace,
            lock_wait=lock_wait,
        )
        running = Lanes(send, writer)
        await nursery.start(running.run)
        yield running
        await running.stop()
        assert running.writer.in_flight == 0  # every report placed in a lane was answered


@pytest.fixture
async def lanes(aio_loop, database_url) -> AsyncIterator[Lanes]:  # type: ignore[no-untyped-def]
    async with _running(database_url, 5.0) as running:
        yield running


@pytest.fixture
async def patient(aio_loop, database_url) -> AsyncIterator[Lanes]:  # type: ignore[no-untyped-def]
    """Lanes whose statements wait for a held row until their reports' deadline: no sensor is
    set apart in the side lane."""
    async with _running(database_url, 5.0, lock_wait=3600.0) as running:
        yield running


@pytest.fixture
async def graceless(aio_loop, database_url) -> AsyncIterator[Lanes]:  # type: ignore[no-untyped-def]
    """Lanes with no shutdown grace: what they hold when stopped is answered at once."""
    async with _running(database_url, 0.0) as running:
        yield running


def _counted_splits() -> float:
    """`droneshield_batch_splits_total`, as /metrics reads it."""
    return REGISTRY.get_sample_value("droneshield_batch_splits_total") or 0.0


def _lane_commits() -> list[float]:
    """Each lane's count of `droneshield_lane_commits_total`, as /metrics reads it."""
    return [
        REGISTRY.get_sample_value("droneshield_lane_commits_total", {"lane": str(lane)}) or 0.0
        for lane in range(LANES + 1)  # the last: the side lane
    ]


async def test_each_sensors_reports_commit_in_order_across_lanes(lanes, db, sensors):
    serials = sensors[:10]
    versions = [f"1.0.{i}" for i in range(40)]
    await add_software(db, *versions)
    before = _lane_commits()
    with trio.fail_after(30):
        # Interleaved: every sensor's versions in order, the sensors' reports mixed; queued
        # at once, so that reports wait in the lanes and sensors move between them.
        for version in versions:
            for serial in serials:
                lanes.send.send_nowait(lanes.report(serial, version))
        await lanes.until(lambda: len(lanes.outcomes) == len(versions) * len(serials))
    assert sorted(lanes.writer.lane_statements)[-2] > 1  # several commits in two lanes or more
    # /metrics counts each lane's commits (the process's counters: other tests' commits too).
    committed = [after - earlier for after, earlier in zip(_lane_commits(), before, strict=True)]
    assert committed == lanes.writer.lane_statements
    rows = await db.fetch(
        "SELECT s.serial, e.new FROM sensor_event e JOIN sensor s ON s.id = e.sensor_id "
        "WHERE e.kind = 'version' ORDER BY e.id"
    )
    history: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        history[row["serial"]].append(int(row["new"].rsplit(".", 1)[1]))
    for serial in serials:
        # Coalescing may skip versions; it never reorders them, and the last one wins.
        assert history[serial] == sorted(history[serial]), serial
        assert history[serial][-1] == 39
    current = await db.fetch("SELECT version FROM sensor WHERE serial = ANY($1)", serials)
    assert {r["version"] for r in current} == {"1.0.39"}


async def test_shutdown_commits_what_every_lane_holds(lanes, db):
    await seed.seed(db, 600)
    serials = [seed.serial_for(n) for n in range(1, 601)]
    with trio.fail_after(30):
        for serial in serials:
            lanes.send.send_nowait(lanes.report(serial))
        # Cancelled before the writer routed a single report: the shutdown path routes them.
        await lanes.stop()
    assert len(lanes.outcomes) == len(serials)
    assert all(len(o) == 1 and isinstance(o[0], Applied) for o in lanes.outcomes.values())
    online = {r["serial"] for r in await db.fetch("SELECT serial FROM sensor WHERE online")}
    assert online == set(serials)


# Held for a moment: the lane is avoided once BATCH_MAX reports wait in it (HELD_AFTER made
# an hour, so that a slow machine's pace cannot count it held first). For longer than
# HELD_AFTER (the mock clock moved on): avoided at once.
@pytest.mark.parametrize(("moment", "held"), [(True, BATCH_MAX + 1), (False, 1)])
async def test_a_lane_held_by_a_row_lock_holds_only_what_waits_in_it(
    patient, db, database_url, mock_clock, monkeypatch, moment, held
):
    """A report is acknowledged only once its lane committed it; new sensors go to the other
    lanes, which commit them, once BATCH_MAX reports wait behind the held lane's commit or it
    has run for HELD_AFTER. (With a lane per sensor by a hash of the serial, a third of these
    went to the held lane: its channel filled, the writer waited for room, and every report
    stalled behind one lock.) The lane waits for the row here (`patient`): a sensor whose row
    is held for over the lock wait goes to the side lane, tested below."""
    lanes = patient
    mock_clock.rate = 1.0  # the wall clock's pace, but for the jump below
    if moment:
        monkeypatch.setattr(droneshield.lanes, "HELD_AFTER", 3600.0)
    count = 20 * BATCH_MAX
    await seed.seed(db, count)
    blocked, *others = [seed.serial_for(n) for n in range(1, count + 1)]
    with trio.fail_after(30):
        async with connect(database_url) as locker, locker.transaction():
            # Another transaction holds the row: the blocked sensor's lane cannot commit.
            await locker.execute("SELECT 1 FROM sensor WHERE serial = $1 FOR UPDATE", blocked)
            await lanes.send.send(lanes.report(blocked))
            await eventually(partial(another_waits_for_a_lock, db))  # the lane's first commit
            if not moment:
                mock_clock.jump(2 * droneshield.lanes.HELD_AFTER)
            for serial in others:
                await lanes.send.send(lanes.report(serial))
            # The reports in the held lane wait; the rest are acknowledged meanwhile.
            await lanes.until(lambda: len(lanes.outcomes) >= count - held)
            waiting = set(range(count)) - set(lanes.outcomes)
            assert waiting == set(range(held))  # the held lane's: the first ones
            stored = await db.fetchval("SELECT count(*) FROM sensor WHERE online")
            assert stored == count - held
        # The lock is gone with the transaction: the held lane commits, then acks.
        await lanes.until(lambda: len(lanes.outcomes) == count)
    assert all(isinstance(o, Applied) for [o] in lanes.outcomes.values())
    assert await db.fetchval("SELECT count(*) FROM sensor WHERE online") == count


class _Failed(logging.Handler):
    """Notes that the writer logged a failed batch it will retry."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def emit(self, record: logging.LogRecord) -> None:
        self.seen = self.seen or record.getMessage().startswith("batch of 1 failed")


async def _stopped_while_retrying(
    lanes: Lanes, db: Connection, serial: str, clock: trio.testing.MockClock
) -> Outcome:
    """The report's outcome when the lanes are stopped while its lane waits to retry it (the
    database back by then): the statement is cancelled while it waits for a row lock, and the
    retry's wait is held still on the mock clock until the stop."""
    failed = _Failed()
    logging.getLogger("droneshield.writer").addHandler(failed)
    try:
        clock.rate = 1.0  # the wall clock's pace, until the retry's wait is held still
        with trio.fail_after(20):
            async with db.transaction():
                await db.execute("SELECT 1 FROM sensor WHERE serial = $1 FOR UPDATE", serial)
                await lanes.send.send(lanes.report(serial))
                await eventually(partial(another_waits_for_a_lock, db))
                clock.rate = 0.0
                assert await cancel_lock_waiters(db) == 1  # a failure the lane retries
        began = time.monotonic()
        while not failed.seen:  # a few passes: the lane is answered by the database
            assert time.monotonic() - began < 10, "the lane did not retry"
            await trio.lowlevel.checkpoint()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lanes.stop)
            await trio.testing.wait_all_tasks_blocked()
            clock.rate = 1.0
    finally:
        logging.getLogger("droneshield.writer").removeHandler(failed)
    [outcome] = lanes.outcomes[0]
    return outcome


async def test_a_batch_waiting_to_retry_at_shutdown_gets_the_grace(lanes, db, sensors, mock_clock):
    """The batch is retried within the shutdown grace, as the reports still queued are (it was
    answered SHUTTING_DOWN at once, though the database was back)."""
    outcome = await _stopped_while_retrying(lanes, db, sensors[0], mock_clock)
    assert isinstance(outcome, Applied), outcome
    assert await db.fetchval("SELECT online FROM sensor WHERE serial = $1", sensors[0])


async def test_with_no_grace_left_a_batch_waiting_to_retry_is_not_tried_again(
    graceless, db, sensors, mock_clock
):
    """An attempt is shielded until the reports' deadline: started once the grace is over, it
    would keep the daemon from stopping for that long (up to the ack timeout)."""
    outcome = await _stopped_while_retrying(graceless, db, sensors[0], mock_clock)
    assert isinstance(outcome, IngestUnavailable), outcome
    assert outcome.message == SHUTTING_DOWN
    assert not await db.fetchval("SELECT online FROM sensor WHERE serial = $1", sensors[0])


async def _poison(db: Connection, serial: str | None, errcode: str = "raise_exception") -> None:
    """A trigger that fails the batch statement for `serial`'s row (None: every row) with
    `errcode`: a statement that is simply wrong, not a lost connection."""
    test = "true" if serial is None else f"NEW.serial = '{serial}'"
    await db.execute(
        f"""
        CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF {test} THEN RAISE EXCEPTION 'poisoned row' USING ERRCODE = '{errcode}'; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER poison BEFORE UPDATE ON sensor FOR EACH ROW EXECUTE FUNCTION poison();
        """
    )


# A row's error (a trigger's RAISE, class P0): the batch is committed in halves until only the
# poisoned sensor's report is left to fail. Any other (a permission, class 42): every half
# would fail alike, so the lane's batch fails whole, the other lanes' batches are committed.
@pytest.mark.parametrize("errcode", ["raise_exception", "insufficient_privilege"])
async def test_a_lane_whose_commit_fails_fails_only_its_reports(
    aio_loop, database_url, settings, nursery, db, errcode
):
    lanes = 4
    await seed.seed(db, 3 * SPILL_AT)  # one call's reports over three lanes
    sensors = [seed.serial_for(n) for n in range(1, 3 * SPILL_AT + 1)]
    running = await nursery.start(
        daemon.run, settings.replace(writer_lanes=lanes, pool_size=lanes + 2), database_url
    )
    poisoned = sensors[2]
    await _poison(db, poisoned, errcode)
    with trio.fail_after(30):
        ack = await send_batch(running.grpc_port, [(s, "") for s in sensors])
    failed = {sensors[r.index] for r in ack.rejected if r.code == "INTERNAL"}
    if errcode == "raise_exception":
        assert failed == {poisoned}
    else:
        assert poisoned in failed
        # The first lane's batch: what waited in it when it took the call's first reports.
        assert 1 < len(failed) <= SPILL_AT
    assert ack.accepted == len(sensors) - len(failed)
    online = {r["serial"] for r in await db.fetch("SELECT serial FROM sensor WHERE online")}
    assert online == set(sensors) - failed


# A data exception (22), a constraint (23), a trigger's RAISE (P0): a row's error.
@pytest.mark.parametrize(
    "errcode", ["invalid_text_representation", "check_violation", "raise_exception"]
)
async def test_a_row_that_fails_its_batch_fails_only_its_sensors_reports(
    lanes, db, sensors, errcode
):
    """Batches that a poisoned row fails are committed in halves by sensor: each of the other
    sensors' reports is answered once, with its last version stored; the poisoned sensor's
    reports are each answered once, with an error, and its row is left as it was."""
    serials, poisoned = sensors[:5], sensors[2]
    versions = ["1.0.0", "1.0.1", "1.0.2"]
    await add_software(db, *versions)
    await _poison(db, poisoned, errcode)
    with trio.fail_after(30):
        for version in versions:
            for serial in serials:
                lanes.send.send_nowait(lanes.report(serial, version))
        await lanes.until(lambda: len(lanes.outcomes) == len(versions) * len(serials))
    for number, outcome in lanes.outcomes.items():
        [answer] = outcome  # once
        serial = serials[number % len(serials)]
        assert isinstance(answer, DroneshieldError) == (serial == poisoned), (serial, answer)
    rows = {
        r["serial"]: r
        for r in await db.fetch("SELECT * FROM sensor WHERE serial = ANY($1)", serials)
    }
    assert {s for s, r in rows.items() if r["version"] == "1.0.2" and r["online"]} == set(
        serials
    ) - {poisoned}
    assert rows[poisoned]["last_seen_at"] is None


async def test_a_batch_stopped_while_it_is_split_answers_each_report_once(lanes, db, sensors):
    """The daemon stops while a batch that a row failed is committed in halves, one statement
    waiting for a row lock (the whole batch's, or its first half's): the split goes on in the
    shutdown grace, and each report is answered once, only the poisoned sensor's failing."""
    serials = sensors[:4]  # halves: the first two, the last two
    held, poisoned = serials[1], serials[2]
    await _poison(db, poisoned)
    with trio.fail_after(30):
        async with db.transaction():
            await db.execute("SELECT 1 FROM sensor WHERE serial = $1 FOR UPDATE", held)
            for serial in serials:
                lanes.send.send_nowait(lanes.report(serial))
            await eventually(partial(another_waits_for_a_lock, db))
            lanes.cancel()
        await lanes.stopped.wait()
    answers = {serials[n]: outcome for n, outcome in lanes.outcomes.items()}
    assert sorted(answers) == sorted(serials)
    for serial, [answer] in answers.items():  # once
        assert isinstance(answer, DroneshieldError) == (serial == poisoned), (serial, answer)
    online = {r["serial"] for r in await db.fetch("SELECT serial FROM sensor WHERE online")}
    assert online == set(serials) - {poisoned}


async def _hold_then_report(
    db: Connection, lanes: Lanes, held: list[str], serials: list[str]
) -> None:
    """In `db`'s open transaction, hold the rows of `held` (as an operator's `psql` would),
    then queue one report for each of `serials`, numbered in that order."""
    await db.execute("SELECT 1 FROM sensor WHERE serial = ANY($1) FOR UPDATE", held)
    for serial in serials:
        lanes.send.send_nowait(lanes.report(serial))


def _each_applied_once(lanes: Lanes) -> None:
    for outcome in lanes.outcomes.values():
        [answer] = outcome  # once
        assert isinstance(answer, Applied), answer


async def test_a_sensor_whose_row_is_held_elsewhere_is_set_apart_from_its_batch(
    aio_loop, database_url, db, sensors
):
    """Another transaction holds one sensor's row (an operator's open `psql`): past the lane's
    lock wait its batch is committed without that sensor, whose report waits alone until the
    row is free (before, every report of the batch waited for it, until their deadline)."""
    held, *others = sensors[:BATCH_MAX]
    before = _counted_splits()
    async with _running(database_url, 5.0, lock_wait=0.2) as lanes:
        with trio.fail_after(ACK_TIMEOUT / 2):  # well before the reports' deadline
            async with db.transaction():
                await _hold_then_report(db, lanes, [held], [held, *others])
                await lanes.until(lambda: len(lanes.outcomes) == len(others))
                assert 0 not in lanes.outcomes  # the held sensor's, still waiting
            await lanes.until(lambda: 0 in lanes.outcomes)
    _each_applied_once(lanes)
    assert _counted_splits() - before >= 1
    online = {r["serial"] for r in await db.fetch("SELECT serial FROM sensor WHERE online")}
    assert online == {held, *others}


async def test_the_sensors_committed_apart_from_a_held_one_leave_its_lane_at_once(
    aio_loop, database_url, db, sensors
):
    """Once a held sensor is set apart and the others are committed, their next reports go to
    a lane that can commit them, not behind the held sensor's retries (until its deadline,
    they counted as in flight in that lane and were placed there)."""
    held, *others = sensors[:4]
    async with _running(database_url, 5.0, lock_wait=0.2) as lanes:
        with trio.fail_after(ACK_TIMEOUT / 2):  # the held report retries until its deadline
            async with db.transaction():
                await _hold_then_report(db, lanes, [held], [held, *others])
                await lanes.until(lambda: len(lanes.outcomes) == len(others))
                lanes.send.send_nowait(lanes.report(others[0]))  # report number 4
                await lanes.until(lambda: 4 in lanes.outcomes)
                assert 0 not in lanes.outcomes  # the held sensor's, still retrying
            await lanes.until(lambda: 0 in lanes.outcomes)
    _each_applied_once(lanes)


async def test_two_held_sensors_in_one_batch_are_each_set_apart_and_every_report_answered_once(
    aio_loop, database_url, db, sensors
):
    """An operator's transaction holds two sensors' rows of one batch: the second is set apart
    inside the part committed apart from the first. A sensor committed there reports again
    while both still retry: its placement is released once (twice, its count went below its
    reports in flight and the writer crashed), and the lanes end with nothing in flight."""
    first, second, *others = sensors[:5]
    async with _running(database_url, 5.0, lock_wait=0.2) as lanes:
        with trio.fail_after(ACK_TIMEOUT / 2):
            async with db.transaction():
                await _hold_then_report(db, lanes, [first, second], [first, second, *others])
                await lanes.until(lambda: len(lanes.outcomes) == len(others))
                lanes.send.send_nowait(lanes.report(others[0]))  # report number 5
                await lanes.until(lambda: 5 in lanes.outcomes)
            await lanes.until(lambda: len(lanes.outcomes) == 6)
    _each_applied_once(lanes)


async def test_reports_waiting_behind_a_held_sensor_in_its_lane_are_committed_meanwhile(
    aio_loop, database_url, db, sensors, monkeypatch
):
    """Reports that wait in a lane behind a sensor whose row another transaction holds are
    committed once that sensor is set apart in the side lane, while its row is still held
    (before, they waited behind its retries until its deadline)."""
    monkeypatch.setattr(droneshield.lanes, "HELD_AFTER", 3600.0)  # new sensors come to lane 0
    held, *others = sensors[:4]
    async with _running(database_url, 5.0, lock_wait=0.2) as lanes:
        with trio.fail_after(ACK_TIMEOUT / 2):  # well before the reports' deadline
            async with db.transaction():
                await _hold_then_report(db, lanes, [held], [held])
                await eventually(partial(another_waits_for_a_lock, db))  # lane 0 committing
                for serial in others:
                    lanes.send.send_nowait(lanes.report(serial))  # waiting behind it
                await lanes.until(lambda: len(lanes.outcomes) == len(others))
                assert 0 not in lanes.outcomes  # the held sensor's, in the side lane
                assert lanes.writer.lane_statements[0] >= 1
            await lanes.until(lambda: 0 in lanes.outcomes)
    _each_applied_once(lanes)
    assert lanes.writer.lane_statements[-1] >= 1  # the side lane committed it


async def test_a_sensor_set_apart_sends_its_next_reports_after_the_first_in_order(
    aio_loop, database_url, db, sensors, monkeypatch, caplog
):
    """The set-apart sensor's next reports follow its first through the side lane, in order,
    and hold no regular lane: while its row is held, other sensors' reports are committed, and
    no regular lane waits for the row again."""
    monkeypatch.setattr(droneshield.lanes, "HELD_AFTER", 3600.0)  # new sensors come to lane 0
    held, first, second = sensors[:3]
    await add_software(db, "1.0.1", "1.0.2")
    async with _running(database_url, 5.0, lock_wait=0.2) as lanes:
        with trio.fail_after(ACK_TIMEOUT / 2):
            async with db.transaction():
                await _hold_then_report(db, lanes, [held], [])
                lanes.send.send_nowait(lanes.report(held, "1.0.1"))
                await eventually(partial(another_waits_for_a_lock, db))
                lanes.send.send_nowait(lanes.report(first))
                await lanes.until(lambda: 1 in lanes.outcomes)  # so the held one is apart
                lanes.send.send_nowait(lanes.report(held, "1.0.2"))  # passed on by lane 0
                lanes.send.send_nowait(lanes.report(second))
                await lanes.until(lambda: 3 in lanes.outcomes)
                assert lanes.outcomes.keys() == {1, 3}
            await lanes.until(lambda: len(lanes.outcomes) == 4)
    _each_applied_once(lanes)
    set_apart = [r for r in caplog.records if "go to the writer's side lane" in r.getMessage()]
    assert len(set_apart) == 1  # no regular lane waited for the row again
    assert await db.fetchval("SELECT version FROM sensor WHERE serial = $1", held) == "1.0.2"
    events = await db.fetch(
        "SELECT e.new FROM sensor_event e JOIN sensor s ON s.id = e.sensor_id "
        "WHERE s.serial = $1 AND e.kind = 'version' ORDER BY e.id",
        held,
    )
    assert [e["new"] for e in events] in (["1.0.2"], ["1.0.1", "1.0.2"])


async def test_reports_in_the_side_lane_at_shutdown_are_each_answered_once(
    aio_loop, database_url, db, sensors, caplog
):
    """The writer stops while the side lane holds a sensor's reports whose row is still held:
    it tries them for the shutdown grace, then answers each once, SHUTTING_DOWN; the report
    committed beside them was acknowledged, and nothing stays in flight."""
    held, other = sensors[:2]
    async with _running(database_url, 0.5, lock_wait=0.2) as lanes:
        with trio.fail_after(ACK_TIMEOUT / 2):
            async with db.transaction():
                await _hold_then_report(db, lanes, [held], [held, other, held])
                await lanes.until(lambda: 1 in lanes.outcomes)  # committed, the held set apart
                assert any("side lane" in r.getMessage() for r in caplog.records)
                await lanes.stop()  # the side lane tries for the grace, then answers
    assert isinstance(lanes.outcomes[1][0], Applied)
    for number in (0, 2):
        [answer] = lanes.outcomes[number]
        assert isinstance(answer, IngestUnavailable), answer
        assert str(answer) == SHUTTING_DOWN


async def test_the_side_lane_commits_a_sensor_whose_row_is_free_again_beside_one_still_held(
    aio_loop, database_url, db, sensors, caplog
):
    """Two sensors' rows held, by two transactions: both go to the side lane, with a later
    report of the second. Its row is freed: both its reports are committed in the side lane's
    next rounds while the first row stays held (a side lane that retried the held sensor in
    place until its deadline held them up behind it)."""
    held, freed = sensors[:2]

    async def both_set_apart() -> bool:
        await trio.lowlevel.checkpoint()
        return sum("go to the writer's side lane" in r.getMessage() for r in caplog.records) == 2

    async with _running(database_url, 5.0, lock_wait=0.2) as lanes:
        with trio.fail_after(ACK_TIMEOUT / 2):
            async with db.transaction(), connect(database_url) as other:
                await db.execute("SELECT 1 FROM sensor WHERE serial = $1 FOR UPDATE", held)
                async with other.transaction():
                    await other.execute("SELECT 1 FROM sensor WHERE serial = $1 FOR UPDATE", freed)
                    lanes.send.send_nowait(lanes.report(held))
                    lanes.send.send_nowait(lanes.report(freed))
                    await eventually(both_set_apart)
                    lanes.send.send_nowait(lanes.report(freed))  # passed on, behind the first
                await lanes.until(lambda: {1, 2} <= lanes.outcomes.keys())
                assert 0 not in lanes.outcomes
            await lanes.until(lambda: 0 in lanes.outcomes)
    _each_applied_once(lanes)


async def test_with_no_splits_left_a_batch_behind_a_held_row_is_retried_whole(
    aio_loop, database_url, db, sensors, monkeypatch, caplog
):
    """The batch's splits spent (here: none to spend), a sensor's held row is a transient
    error like any lock timeout: the batch is retried whole until the row is free, never
    answered as an internal error."""
    monkeypatch.setattr(droneshield.writer, "SPLITS_MAX", 0)
    serials = sensors[:3]

    async def retried() -> bool:
        return any("LockNotAvailableError" in r.getMessage() for r in caplog.records)

    async with _running(database_url, 5.0, lock_wait=0.2) as lanes:
        with trio.fail_after(ACK_TIMEOUT / 2):
            async with db.transaction():
                await _hold_then_report(db, lanes, serials[:1], serials)
                await eventually(retried)
                assert not lanes.outcomes
            await lanes.until(lambda: len(lanes.outcomes) == len(serials))
    _each_applied_once(lanes)


async def test_the_lock_wait_lowers_a_longer_lock_timeout_and_keeps_a_shorter_one(
    aio_loop, database_url, db
):
    """A role's or database's shorter lock_timeout stands (an operator chose it); none, or a
    longer one, is lowered to the writer's lock wait."""
    name = await db.fetchval("SELECT current_database()")
    for preset, expected in (("0", "3s"), ("10s", "3s"), ("100ms", "100ms")):
        await db.execute(f"ALTER DATABASE {name} SET lock_timeout = '{preset}'")
        async with connect(database_url) as conn:
            await limit_lock_wait(conn, 3.0)
            assert await conn.fetchval("SHOW lock_timeout") == expected, preset


async def test_a_batch_every_row_fails_is_split_at_most_splits_max_times(
    aio_loop, database_url, settings, nursery, db, caplog
):
    """A constraint no report can meet fails every half: the one lane's batch of 300 sensors
    gives up after SPLITS_MAX splits (without the cap: 299, and 599 statements)."""
    await seed.seed(db, 300)
    sensors = [seed.serial_for(n) for n in range(1, 301)]
    running = await nursery.start(
        daemon.run, settings.replace(writer_lanes=1, pool_size=3), database_url
    )
    await _poison(db, None)
    caplog.set_level(logging.WARNING, logger="droneshield.writer")
    before = _counted_splits()
    with trio.fail_after(60):
        ack = await send_batch(running.grpc_port, [(s, "") for s in sensors])
    assert ack.accepted == 0
    assert len(ack.rejected) == len(sensors)
    assert {r.code for r in ack.rejected} == {"INTERNAL"}
    splits = sum("committing it in halves" in r.getMessage() for r in caplog.records)
    assert splits == SPLITS_MAX
    assert _counted_splits() - before == SPLITS_MAX


async def test_a_release_removed_while_a_report_stores_it_leaves_the_report_accepted(lanes, db):
    """The batch statement read the release, then its foreign-key check waited on the removal
    and found the row gone (a ForeignKeyViolation, once an internal error for the whole
    batch). Tried again, the statement no longer sees the release: the report is stored
    without it, as a report of a version never uploaded is."""
    await seed.seed(db, 1)
    await add_software(db, "1.0.0")
    serial = seed.serial_for(1)
    with trio.fail_after(20):
        async with db.transaction():
            await db.execute("DELETE FROM software WHERE version = '1.0.0'")
            await lanes.send.send(lanes.report(serial, "1.0.0"))

            await eventually(partial(another_waits_for_a_lock, db))
        await lanes.until(lambda: 0 in lanes.outcomes)
    [outcome] = lanes.outcomes[0]
    assert isinstance(outcome, Applied), outcome
    row = await db.fetchrow("SELECT online, version FROM sensor WHERE serial = $1", serial)
    assert (row["online"], row["version"]) == (True, None)


def test_the_pool_must_hold_a_connection_per_lane_the_side_lane_and_one_more():
    with pytest.raises(ValueError, match=r"pool_size must be at least writer_lanes \+ 2 = 6"):
        Settings(writer_lanes=4, pool_size=5)
    assert Settings(writer_lanes=4, pool_size=6).pool_size == 6
