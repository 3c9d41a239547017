"""Gateway mode's pure logic (partition, batches, pacing, the ack record) and the soak's
judgement of silences and figures, on made-up timelines."""

from __future__ import annotations

import io
import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emitter.record import AckRecord
from emitter.schedule import Fleet, FleetShape, chunks, gateway_phase, partition
from tests.soak import figures, verify
from tests.soak.run import Options
from tests.soak.search import Search

SERIALS = [f"DS-{n:08d}" for n in range(1, 101)]


@given(st.integers(min_value=0, max_value=300), st.integers(min_value=1, max_value=50))
def test_partition_gives_every_sensor_to_exactly_one_gateway_evenly(count, gateways):
    serials = [f"s{i}" for i in range(count)]
    shares = partition(serials, gateways)
    assert len(shares) == gateways
    assert sorted(s for share in shares for s in share) == sorted(serials)
    sizes = [len(share) for share in shares]
    assert max(sizes) - min(sizes) <= 1


def test_partition_refuses_no_gateway():
    with pytest.raises(ValueError, match="at least 1"):
        partition(SERIALS, 0)


@given(st.integers(min_value=0, max_value=500), st.integers(min_value=1, max_value=100))
def test_chunks_keep_order_and_respect_the_batch_limit(count, size):
    reports = [(f"s{i}", "v1.0.0") for i in range(count)]
    batches = chunks(reports, size)
    assert [r for b in batches for r in b] == reports
    assert all(1 <= len(b) <= size for b in batches)


def test_gateways_send_at_evenly_spread_moments_of_the_flush_period():
    phases = [gateway_phase(g, 4, 1.0) for g in range(4)]
    assert phases == [0.0, 0.25, 0.5, 0.75]


def test_gateway_shares_together_send_the_fleet_rate():
    """G fleets over the G shares report as often as one fleet over all sensors: ~N / interval
    reports per second, each sensor once per heartbeat."""
    shape = FleetShape(interval=10.0, churn=0.0, never=0.0, upgrade_every=0)
    fleets = [
        Fleet(share, shape, random.Random(g), 0.0) for g, share in enumerate(partition(SERIALS, 7))
    ]
    sent = [r for t in range(1, 101) for fleet in fleets for r in fleet.pop_due(float(t))]
    assert 100 * 100 / 10 * 0.9 <= len(sent) <= 100 * 100 / 10 * 1.1


def _record() -> AckRecord:
    return AckRecord(["a", "b", "c"], gap_min=5.0, now=0.0)


def test_record_counts_offered_and_acknowledged_and_notes_the_last_ack():
    record = _record()
    record.sending(["a", "b"], 1.0)
    record.answered(["a", "b"], 1.0, 1.2, failed={1}, code=None)
    out = io.StringIO()
    record.rotate(2.0, out)
    period = json.loads(out.getvalue())
    assert (period["offered"], period["acked"], period["failed"]) == (2, 1, 1)
    assert record.acked_sent[0] == 1.0
    assert record.acked_at[0] == 1.2
    assert record.uncertain == {"b"}


def test_record_keeps_silences_longer_than_the_minimum_and_closes_open_ones_at_the_end():
    record = _record()
    record.sending(["a", "b"], 1.0)
    record.answered(["a", "b"], 1.0, 1.1, failed=set(), code=None)
    record.sending(["a"], 3.0)  # 2 s: not a silence worth keeping
    record.answered(["a"], 3.0, 3.1, failed=set(), code=None)
    record.sending(["a"], 10.0)  # 7 s silence
    record.answered(["a"], 10.0, 10.1, failed=set(), code=None)
    out = io.StringIO()
    record.final(20.0, out)
    final = json.loads(out.getvalue())
    assert final["gaps"] == [
        ["a", 3.0, 3.1, 10.0, True],
        ["a", 10.0, 10.1, None, True],  # still silent at the end
        ["b", 1.0, 1.1, None, True],
    ]
    assert final["last_acked"] == {"a": [10.0, 10.1], "b": [1.0, 1.1]}


def test_a_failed_call_makes_its_sensors_uncertain_and_its_silence_unexpected():
    record = _record()
    record.sending(["c"], 1.0)
    record.answered(["c"], 1.0, 16.0, failed=set(), code="DEADLINE_EXCEEDED")
    assert record.period.failed == 1
    out = io.StringIO()
    record.final(30.0, out)
    final = json.loads(out.getvalue())
    assert final["uncertain"] == ["c"]
    assert final["gaps"] == [["c", 1.0, None, None, False]]


def _final(gaps, uncertain=()):
    return {"gaps": gaps, "uncertain": list(uncertain)}


def test_every_long_silence_needs_an_offline_event_from_its_last_report():
    gaps = [["a", 100.0, 100.2, 120.0, True], ["b", 100.0, 100.2, 104.0, True]]
    offline = [{"serial": "a", "lastSeenAt": 100.1}]
    result = verify.silences(_final(gaps), offline, 10.0, 2.0, 200.0, 0.0)
    assert (result["expected_offline"], result["missed"], result["invented"]) == (1, 0, 0)
    result = verify.silences(_final(gaps), [], 10.0, 2.0, 200.0, 0.0)
    assert result["missed"] == 1


def test_only_silences_timing_out_once_the_webhook_is_registered_are_expected():
    """Registered when the warm-up ends, the webhook gets no event decided before: a silence
    from 100 s times out at 110 s."""
    gaps = [["a", 100.0, 100.2, 130.0, True], ["b", 105.0, 105.1, 130.0, True]]
    offline = [{"serial": "b", "lastSeenAt": 105.05}]
    result = verify.silences(_final(gaps), offline, 10.0, 2.0, 200.0, 112.0)
    assert (result["expected_offline"], result["missed"], result["invented"]) == (1, 0, 0)
    result = verify.silences(_final(gaps), [], 10.0, 2.0, 200.0, None)
    assert result["expected_offline"] == 0  # the run ended before it was registered


def test_an_offline_event_without_a_silence_behind_it_is_invented():
    gaps = [["a", 100.0, 100.2, 120.0, True]]
    offline = [
        {"serial": "a", "lastSeenAt": 100.1},
        {"serial": "a", "lastSeenAt": 150.0},  # a was reporting then
        {"serial": "z", "lastSeenAt": 100.0},  # never silent
    ]
    result = verify.silences(_final(gaps), offline, 10.0, 2.0, 200.0, 0.0)
    assert result["invented"] == 2


def test_sensors_with_a_failed_report_are_left_out_of_the_silence_checks():
    gaps = [["a", 100.0, None, 120.0, False]]
    offline = [{"serial": "a", "lastSeenAt": 130.0}]
    result = verify.silences(_final(gaps, ["a"]), offline, 10.0, 2.0, 200.0, 0.0)
    assert (result["missed"], result["invented"], result["uncertain_sensors"]) == (0, 0, 1)


def test_event_ids_are_de_duplicated():
    events, dropped = verify.dedupe([{"id": "1"}, {"id": "2"}, {"id": "1"}])
    assert [e["id"] for e in events] == ["1", "2"]
    assert dropped == 1


def _row(minute, rss, **kw):
    base = {
        "minute": minute,
        "warmup": False,
        "daemon_rss_mb": rss,
        "daemon_cpu_pct": 10,
        "pg_cpu_pct": 10,
        "emitter_cpu_pct": 10,
        "machine_cpu_pct": 20,
        "commit_ms": 10.0,
    }
    return base | kw


def test_rss_growth_counts_only_after_the_first_ten_minutes():
    rows = [_row(m, 100 + (50 if m <= 10 else m * 0.2)) for m in range(1, 31)]
    assert figures.rss_growth(rows, 0.0) == pytest.approx(2.0)
    assert figures.rss_growth(rows[:9], 0.0) is None


def test_rss_growth_counts_ten_minutes_from_the_end_of_the_warm_up():
    """The start-up wave's memory (caches filling as every sensor first reports) is no growth:
    the baseline is ten minutes into the steady state, not into the run."""
    rows = [_row(m, 100 + 20 * min(m, 13) + m * 0.1) for m in range(1, 31)]  # filling to 13
    assert figures.rss_growth(rows, 0.0) > figures.RSS_GROWTH_GOAL
    assert figures.rss_growth(rows, 3.0) == pytest.approx(1.0)
    assert figures.rss_growth(rows, 25.0) is None  # too few steady minutes after ten


def test_the_warm_up_is_a_heartbeat_and_a_timeout_in_whole_periods():
    default = Options(interval=60.0, period=60.0)  # offline after 90 s: 150 s, so 3 periods
    assert default.warmup_periods == 3
    assert default.seconds == 3 * 60 + 60 * 60
    assert Options(interval=60.0, period=75.0).warmup_periods == 2
    assert Options(interval=2.0, period=2.0, warmup=2.0).warmup_periods == 1
    assert Options(warmup=0.0).warmup_periods == 0


def _period(at, seconds=10.0, offered=100):
    return {"at": at, "seconds": seconds, "offered": offered, "acked": offered}


def test_the_first_periods_are_the_warm_up_and_the_steady_state_begins_where_they_end():
    phase = figures.Phase(periods=2)
    assert phase.since is None
    assert [phase.warm(_period(at)) for at in (110.0, 120.0, 130.0, 140.0)] == [
        True,
        True,
        False,
        False,
    ]
    assert phase.since == 120.0


def test_without_a_warm_up_the_steady_state_begins_with_the_first_period():
    phase = figures.Phase(periods=0)
    assert phase.warm(_period(110.0)) is False
    assert phase.since == 100.0


def test_only_samples_of_the_steady_state_count():
    samples = [(100.0, 5.0), (119.9, 4.0), (120.0, 0.1), (130.0, 0.2)]
    assert figures.steady(samples, 120.0) == [0.1, 0.2]
    assert figures.steady(samples, None) == []  # the run ended within its warm-up


def test_the_start_up_wave_does_not_fail_the_latency_criteria():
    """Every sensor's first report in the warm-up makes a burst of events whose webhook
    lateness would fail the run; the steady state's samples pass."""
    hooks = [(t, 5.0) for t in range(100, 120)] + [(t, 0.3) for t in range(120, 200)]
    whole = figures.criteria(1000, 1000, 0, [], [], [v for _, v in hooks], [], 0.0)
    steady = figures.criteria(1000, 1000, 0, [], [], figures.steady(hooks, 120.0), [], 2.0)
    met = {c["criterion"]: c["met"] for c in whole}, {c["criterion"]: c["met"] for c in steady}
    assert [m["webhook lateness p99"] for m in met] == [False, True]


def test_a_run_with_nothing_offered_after_its_warm_up_does_not_pass():
    table = figures.criteria(0, 0, 0, [], [], [], [], 1.0)
    assert {c["criterion"]: c["met"] for c in table}["offered reports acknowledged"] is False


def test_the_first_resource_to_run_out_is_named():
    rows = [_row(1, 80), _row(2, 80, pg_cpu_pct=95), _row(3, 80, daemon_cpu_pct=99)]
    assert figures.exhausted(rows, workers=1).startswith("PostgreSQL CPU")
    assert figures.exhausted(rows[:1], workers=1) is None


def test_all_cores_busy_is_named_with_who_used_them_when_no_process_uses_a_whole_one():
    """The 1M soak on 2 cores: daemon 72 %, PostgreSQL 52 %, emitter 90 % of a core; no process
    at its limit, yet nothing was left for any of them."""
    busy = _row(2, 80, daemon_cpu_pct=72, pg_cpu_pct=52, emitter_cpu_pct=90, machine_cpu_pct=99)
    found = figures.exhausted([_row(1, 80), busy], workers=1)
    assert found is not None
    assert found.startswith("the machine's CPU (99% of all cores busy at minute 2")
    assert "emitter 90%" in found


def test_a_resource_saturated_by_the_start_up_wave_alone_has_not_run_out():
    rows = [_row(1, 80, daemon_cpu_pct=99, warmup=True), _row(2, 80), _row(3, 80)]
    assert figures.exhausted(rows, workers=1) is None


def test_the_pass_table_judges_each_criterion():
    table = figures.criteria(1000, 995, 0, [0.5], [0.1], [0.3], [], 0.0)
    met = {c["criterion"]: c["met"] for c in table}
    assert met["offered reports acknowledged"] is True
    assert met["report → WebSocket p99"] is True
    assert met["daemon RSS growth after 10 min"] is None
    table = figures.criteria(1000, 900, 3, [1.5], [], [3.0], [], 0.0)
    met = {c["criterion"]: c["met"] for c in table}
    assert not any(met[k] for k in ("offered reports acknowledged", "acknowledged reports lost"))
    assert met["report → WebSocket p99"] is None  # no samples: not judged


def test_the_chart_is_svg_with_a_polyline_per_series():
    rows = [
        _row(m, 80)
        | {
            "offered_per_s": 100.0,
            "acked_per_s": 99.0,
            "ack_p99_ms": 5.0,
            "offline_late_p99_ms": None,
            "ws_p99_ms": 40.0,
            "hook_p99_ms": 300.0,
        }
        for m in (1, 2, 3)
    ]
    text = figures.svg(rows, "a <test>", 0.0)
    assert text.startswith("<svg")
    assert "a &lt;test&gt;" in text
    assert text.count("<polyline") == 9  # offline lateness has no samples
    assert ">warm-up<" not in text
    assert figures.svg(rows, "shaded", 1.5).count(">warm-up</text>") == len(figures.PANELS)


def _searched(passes_up_to: int, first: int, ceiling: int) -> tuple[list[int], Search]:
    search = Search(first, ceiling)
    tried = []
    while (size := search.next()) is not None:
        tried.append(size)
        search.record(size, size <= passes_up_to)
    return tried, search


def test_find_max_doubles_then_halves_the_bracket_to_a_quarter():
    tried, search = _searched(passes_up_to=530_000, first=100_000, ceiling=1_000_000)
    assert tried == [100_000, 200_000, 400_000, 800_000, 600_000, 500_000]
    assert (search.best, search.failed) == (500_000, 600_000)


def test_find_max_tries_the_ceiling_itself_and_stops_when_it_passes():
    tried, search = _searched(passes_up_to=10**9, first=300_000, ceiling=1_000_000)
    assert tried == [300_000, 600_000, 1_000_000]
    assert (search.best, search.failed) == (1_000_000, None)


def test_find_max_stops_when_even_the_first_size_fails():
    tried, search = _searched(passes_up_to=0, first=10_000, ceiling=1_000_000)
    assert tried == [10_000]
    assert search.best is None
