"""The emitter's pure logic: version progression, the fleet's timetable, pacing, backoff,
percentiles, failure classification and the demo release PDFs."""

from __future__ import annotations

import itertools
import math
import random
import re
import statistics
import subprocess
import sys

import pytest
from grpclib import GRPCError, Status
from grpclib.exceptions import StreamTerminatedError
from hypothesis import given
from hypothesis import strategies as st

from droneshield.ingest.wire import Rejection
from emitter.backoff import Backoff, backoff_delay
from emitter.cli import build_parser
from emitter.demo_uploads import file_name, release_pdf
from emitter.gateway import not_committed
from emitter.link import UNREACHABLE, classify, parse_target
from emitter.schedule import Fleet, FleetShape, Pacer, jittered
from emitter.serials import from_file
from emitter.stats import Reservoir, Tally, percentiles
from emitter.versions import (
    FLEET_LADDER,
    RELEASED,
    UNRELEASED,
    compat_next,
    fleet_next,
    upgrade_chance,
)

SERIALS = [f"DS-{n:08d}" for n in range(1, 201)]


@given(st.integers(min_value=0), st.integers(min_value=1, max_value=60))
def test_compat_versions_start_at_1_0_0_and_never_go_backwards(seed, reports):
    rng = random.Random(seed)
    version = compat_next(None, rng)
    assert version == "1.0.0"
    for _ in range(reports):
        following = compat_next(version, rng)
        assert following in RELEASED
        assert RELEASED.index(following) >= RELEASED.index(version)
        version = following


def test_compat_versions_reach_every_released_version():
    rng = random.Random(1)
    seen = set()
    for _ in range(50):
        version = None
        for _ in range(10):
            version = compat_next(version, rng)
            seen.add(version)
    assert seen == set(RELEASED)


def test_upgrade_chance_matches_the_mean_time_between_upgrades():
    assert upgrade_chance(10, 0) == 0.0
    assert upgrade_chance(10, 600) == pytest.approx(1 - math.exp(-10 / 600))
    # Sampled every second or every minute, the expected upgrades per hour agree.
    per_hour_fine = 3600 * upgrade_chance(1, 600)
    per_hour_coarse = 60 * upgrade_chance(60, 600)
    assert per_hour_fine == pytest.approx(6, rel=0.01)
    assert per_hour_coarse == pytest.approx(5.7, rel=0.01)


@given(st.integers(min_value=0), st.floats(min_value=0, max_value=1))
def test_fleet_upgrades_move_one_rung_up_and_stop_at_the_top(seed, chance):
    rng = random.Random(seed)
    version = RELEASED[0]
    for _ in range(20):
        following = fleet_next(version, chance, rng)
        assert FLEET_LADDER.index(following) - FLEET_LADDER.index(version) in (0, 1)
        version = following
    assert fleet_next(FLEET_LADDER[-1], 1.0, rng) == FLEET_LADDER[-1]


def _simulate(fleet: Fleet, until: float, step: float = 0.25) -> list[tuple[float, str, str]]:
    sent = []
    now = 0.0
    while now <= until:
        sent.extend((now, serial, version) for serial, version in fleet.pop_due(now))
        now += step
    return sent


def test_fleet_leaves_the_never_share_silent_forever():
    fleet = Fleet(SERIALS, FleetShape(never=0.1, churn=0.0), random.Random(3), now=0.0)
    sent = _simulate(fleet, until=120)
    reporting = {serial for _, serial, _ in sent}
    assert len(fleet.never_reporting) == 20
    assert reporting.isdisjoint(fleet.never_reporting)
    assert reporting == set(SERIALS) - set(fleet.never_reporting)


def test_fleet_heartbeats_every_interval_within_the_jitter():
    shape = FleetShape(interval=10, jitter=0.2, churn=0.0, never=0.0)
    fleet = Fleet(SERIALS[:20], shape, random.Random(5), now=0.0)
    times: dict[str, list[float]] = {}
    now = 0.0
    while now <= 300:
        for serial, _ in fleet.pop_due(now):
            times.setdefault(serial, []).append(now)
        now = fleet.next_due()  # a punctual caller
    for serial, beats in times.items():
        assert beats[0] <= 10, serial  # the first heartbeat comes within one interval
        gaps = [b - a for a, b in itertools.pairwise(beats)]
        assert all(8 - 1e-9 <= gap <= 12 + 1e-9 for gap in gaps), (serial, gaps)


def test_fleet_churn_keeps_its_share_silent_and_brings_sensors_back():
    shape = FleetShape(interval=10, churn=0.2, silence=60, never=0.0)
    fleet = Fleet(SERIALS, shape, random.Random(11), now=0.0)
    silent_shares = []
    beats: dict[str, list[float]] = {}
    for now in range(0, 4 * 3600, 5):
        for serial, _ in fleet.pop_due(now):
            beats.setdefault(serial, []).append(now)
        if now % 300 == 0:
            silent_shares.append(fleet.census(now)[0] / len(SERIALS))
    assert statistics.mean(silent_shares) == pytest.approx(0.2, abs=0.05)
    # A silent spell shows as a gap of several intervals, followed by heartbeats again.
    came_back = [s for s, b in beats.items() if any(y - x > 30 for x, y in itertools.pairwise(b))]
    assert len(came_back) > len(SERIALS) / 2


def test_fleet_without_churn_never_goes_silent():
    fleet = Fleet(SERIALS, FleetShape(churn=0.0, never=0.0), random.Random(2), now=0.0)
    _simulate(fleet, until=600, step=1)
    assert fleet.census(600)[0] == 0


def test_fleet_versions_only_go_up_and_some_reach_an_unreleased_version():
    shape = FleetShape(interval=10, churn=0.0, never=0.0, upgrade_every=300)
    fleet = Fleet(SERIALS, shape, random.Random(8), now=0.0)
    last: dict[str, int] = {}
    for _, serial, version in _simulate(fleet, until=1800, step=1):
        rung = FLEET_LADDER.index(version.removeprefix("v"))
        assert rung >= last.get(serial, 0)
        last[serial] = rung
    assert any(FLEET_LADDER[r] in UNRELEASED for r in last.values())
    assert len({FLEET_LADDER[r] for r in last.values()}) > 1


def test_fleet_sends_one_report_per_sensor_after_a_long_stall():
    fleet = Fleet(SERIALS[:30], FleetShape(interval=1, churn=0.0, never=0.0), random.Random(4), 0)
    reports = fleet.pop_due(60.0)  # the daemon was down for a minute
    assert sorted(serial for serial, _ in reports) == sorted(SERIALS[:30])
    assert fleet.next_due() >= 60.0 + 0.9  # and then the usual interval, not a catch-up burst


@pytest.mark.parametrize(
    "bad",
    [{"interval": 0}, {"jitter": 1.0}, {"churn": 1.0}, {"never": 1.5}, {"silence": 0}],
)
def test_fleet_shape_rejects_impossible_settings(bad):
    with pytest.raises(ValueError):  # noqa: PT011 - the message names the field
        FleetShape(**bad)


@given(st.integers(min_value=0), st.floats(min_value=0.1, max_value=100))
def test_jittered_interval_stays_within_its_band(seed, interval):
    value = jittered(interval, 0.25, random.Random(seed))
    assert interval * 0.75 <= value <= interval * 1.25


def test_pacer_spaces_calls_and_does_not_catch_up_after_a_stall():
    pacer = Pacer(0.5)
    assert [pacer.reserve(0.0) for _ in range(3)] == [0.0, 0.5, 1.0]
    assert pacer.reserve(10.0) == 10.0  # late: now, not the missed slots
    assert pacer.reserve(10.0) == 10.5


def test_unpaced_pacer_never_delays():
    pacer = Pacer(0.0)
    assert [pacer.reserve(t) for t in (1.0, 1.0, 2.0)] == [1.0, 1.0, 2.0]


@given(st.integers(min_value=0, max_value=200), st.integers(min_value=0))
def test_backoff_delay_is_bounded_by_the_exponential_step_and_the_cap(attempt, seed):
    delay = backoff_delay(attempt, 0.2, 10.0, random.Random(seed))
    step = min(10.0, 0.2 * 2 ** min(attempt, 32))
    assert step / 2 <= delay <= step


def test_backoff_pauses_grow_until_the_cap_and_reset_on_success():
    backoff = Backoff(random.Random(0), base=0.1, cap=2.0)
    pauses = []
    for now in range(10):
        pauses.append(backoff.failed(backoff.generation, float(now)))
    assert pauses[:5] == sorted(pauses[:5])  # steps 0.1, 0.2, … 1.6, then the cap
    assert all(1.0 <= pause <= 2.0 for pause in pauses[5:])
    assert backoff.ready_at == 9.0 + pauses[-1]
    assert backoff.succeeded() is True
    assert backoff.succeeded() is False
    assert backoff.failed(backoff.generation, 20.0) <= 0.1


def test_calls_failing_together_start_one_backoff_pause():
    backoff = Backoff(random.Random(0), base=1.0, cap=60.0)
    generation = backoff.generation  # a hundred calls in flight when the daemon went down
    first = backoff.failed(generation, 0.0)
    assert first is not None
    assert all(backoff.failed(generation, 0.0) is None for _ in range(99))
    assert backoff.attempt == 1


@pytest.mark.parametrize(
    ("exc", "code", "back_off"),
    [
        (GRPCError(Status.UNAVAILABLE, "shutting down"), "UNAVAILABLE", True),
        (GRPCError(Status.RESOURCE_EXHAUSTED, "slow down"), "RESOURCE_EXHAUSTED", True),
        (GRPCError(Status.NOT_FOUND, "unknown serial"), "NOT_FOUND", False),
        (GRPCError(Status.INVALID_ARGUMENT, "bad"), "INVALID_ARGUMENT", False),
        (ConnectionRefusedError(111, "refused"), UNREACHABLE, True),
        (StreamTerminatedError("Connection lost"), UNREACHABLE, True),
        (TimeoutError(), "DEADLINE_EXCEEDED", True),
        # grpclib's own wording when the connection ends inside an answer's message
        (AssertionError("Received less data than expected"), UNREACHABLE, True),
    ],
)
def test_failures_that_mean_the_daemon_is_down_or_busy_back_off(exc, code, back_off):
    failure = classify(exc)
    assert failure is not None
    assert (failure.code, failure.back_off) == (code, back_off)


def test_a_bug_is_not_mistaken_for_a_call_failure():
    assert classify(KeyError("serial")) is None
    assert classify(AssertionError("a broken invariant of ours")) is None


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("127.0.0.1:50051", ("127.0.0.1", 50051)),
        ("daemon:1", ("daemon", 1)),
        ("[::1]:9", ("::1", 9)),
    ],
)
def test_target_parses_host_and_port(target, expected):
    assert parse_target(target) == expected


@pytest.mark.parametrize("target", ["daemon", "daemon:", "daemon:grpc"])
def test_target_without_a_port_is_refused(target):
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_target(target)


def test_percentiles_of_a_known_distribution():
    samples = [float(n) for n in range(1, 101)]
    assert percentiles(samples) == pytest.approx({50: 50.5, 95: 95.05, 99: 99.01})
    assert percentiles([3.0]) == {50: 3.0, 95: 3.0, 99: 3.0}
    assert all(math.isnan(v) for v in percentiles([]).values())


@given(st.lists(st.floats(min_value=0, max_value=10), min_size=2, max_size=200))
def test_percentiles_are_ordered_and_within_the_samples(samples):
    p = percentiles(samples)
    slack = 1e-9 * max(samples)  # interpolation between equal samples may round
    assert min(samples) - slack <= p[50] <= p[95] + slack <= p[99] + 2 * slack
    assert p[99] <= max(samples) + slack


def test_reservoir_keeps_a_bounded_uniform_sample():
    reservoir = Reservoir(random.Random(0), size=1000)
    for n in range(100_000):
        reservoir.add(float(n))
    assert len(reservoir.values) == 1000
    assert reservoir.seen == 100_000
    assert statistics.mean(reservoir.values) == pytest.approx(50_000, rel=0.05)


def test_tally_line_is_logfmt_with_rate_errors_and_percentiles():
    tally = Tally(started=0.0, reports=500, rpcs=250)
    tally.errors.update({"UNAVAILABLE": 2})
    tally.rejected.update({"VERSION_NOT_STORED": 3})
    tally.latencies.extend([0.001, 0.002, 0.003])
    fields = dict(kv.split("=", 1) for kv in tally.line("load", now=2.0).split()[1:])
    assert fields["reports_per_s"] == "250.0"
    assert fields["rpcs_per_s"] == "125.0"
    assert fields["errors"] == "2"
    assert fields["error_codes"] == "UNAVAILABLE:2"
    assert fields["rejected"] == "VERSION_NOT_STORED:3"
    assert fields["p50_ms"] == "2.00"


@pytest.mark.parametrize("version", RELEASED)
def test_release_pdf_is_a_small_valid_pdf_with_a_correct_xref(version):
    pdf = release_pdf(version)
    assert pdf.startswith(b"%PDF-1.4\n")
    assert pdf.endswith(b"%%EOF\n")
    assert len(pdf) < 1024
    startxref = int(re.search(rb"startxref\n(\d+)\n", pdf).group(1))
    assert pdf[startxref:].startswith(b"xref\n0 6\n")
    table = pdf[startxref:].split(b"\n")[2:8]
    assert all(len(entry) == 19 for entry in table)  # 20 bytes with the newline
    for number, entry in enumerate(table[1:], start=1):
        offset = int(entry[:10])
        assert pdf[offset:].startswith(b"%d 0 obj\n" % number)
    length = int(re.search(rb"/Length (\d+)", pdf).group(1))
    stream = pdf.split(b"stream\n", 1)[1].split(b"\nendstream", 1)[0]
    assert len(stream) == length
    assert f"v{version}".encode() in stream


def test_release_file_names_carry_the_version():
    assert file_name("3.4.2") == "software_v3.4.2.pdf"
    assert release_pdf("1.0.0") == release_pdf("1.0.0")  # deterministic: re-uploads are no-ops


def test_serials_file_skips_blank_lines_and_comments(tmp_path):
    path = tmp_path / "serials.txt"
    path.write_text("# gateway 7\nDS-00000001\n\n  DS-00000002  \n# spare\nDS-00000003\n")
    assert from_file(path) == ["DS-00000001", "DS-00000002", "DS-00000003"]


@pytest.mark.parametrize(
    "argv",
    [
        ["compat", "--limit", "0"],
        ["fleet", "--limit", "-1"],
        ["fleet", "--interval", "nan"],
        ["compat", "--interval", "0"],
        ["load", "--concurrency", "0"],
        ["gateways", "--record", "r.jsonl", "--flush", "inf"],
        ["fleet", "--timeout", "-5"],
    ],
)
def test_counts_and_durations_that_would_send_nothing_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as refused:
        build_parser().parse_args(argv)
    assert refused.value.code == 2
    assert "must be" in capsys.readouterr().err


def test_a_batch_report_refused_for_any_reason_but_its_version_is_not_committed():
    codes = ["UNAVAILABLE", "NOT_FOUND", "VERSION_NOT_STORED", "INVALID_ARGUMENT"]
    rejected = [Rejection(index=i, code=code, reason="") for i, code in enumerate(codes)]
    assert not_committed(rejected) == {0, 1, 3}


# Package __init__ modules the wire code's import passes through; they hold no code. The wire
# module (the generated messages' C codec classes). And the run file of `droneshield dev`
# (stdlib only): the other contract the emitter reads, to find a running `just dev` by itself.
PACKAGES = frozenset(
    {"droneshield", "droneshield.ingest", "droneshield.ingest.wire", "droneshield.runfile"}
)


def test_emitter_imports_only_the_wire_code_of_the_daemon():
    code = (
        "import sys, emitter.cli\n"
        "print(' '.join(m for m in sys.modules if m.startswith('droneshield')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    modules = done.stdout.split()
    assert "droneshield.ingest.proto.status" in modules
    assert all(m.startswith("droneshield.ingest.proto") or m in PACKAGES for m in modules), modules
