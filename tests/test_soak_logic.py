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
    assert (period["offered"], period["acked"]) == (2, 1)
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
    result = verify.silences(_final(gaps), offline, 10.0, 2.0, 200.0)
    assert (result["expected_offline"], result["missed"], result["invented"]) == (1, 0, 0)
    result = verify.silences(_final(gaps), [], 10.0, 2.0, 200.0)
    assert result["missed"] == 1


def test_an_offline_event_without_a_silence_behind_it_is_invented():
    gaps = [["a", 100.0, 100.2, 120.0, True]]
    offline = [
        {"serial": "a", "lastSeenAt": 100.1},
        {"serial": "a", "lastSeenAt": 150.0},  # a was reporting then
        {"serial": "z", "lastSeenAt": 100.0},  # never silent
    ]
    result = verify.silences(_final(gaps), offline, 10.0, 2.0, 200.0)
    assert result["invented"] == 2


def test_sensors_with_a_failed_report_are_left_out_of_the_silence_checks():
    gaps = [["a", 100.0, None, 120.0, False]]
    offline = [{"serial": "a", "lastSeenAt": 130.0}]
    result = verify.silences(_final(gaps, ["a"]), offline, 10.0, 2.0, 200.0)
    assert (result["missed"], result["invented"], result["uncertain_sensors"]) == (0, 0, 1)


def test_event_ids_are_de_duplicated():
    events, dropped = verify.dedupe([{"id": "1"}, {"id": "2"}, {"id": "1"}])
    assert [e["id"] for e in events] == ["1", "2"]
    assert dropped == 1


def _row(minute, rss, **kw):
    base = {
        "minute": minute,
        "daemon_rss_mb": rss,
        "daemon_cpu_pct": 10,
        "pg_cpu_pct": 10,
        "commit_ms": 10.0,
    }
    return base | kw


def test_rss_growth_counts_only_after_the_first_ten_minutes():
    rows = [_row(m, 100 + (50 if m <= 10 else m * 0.2)) for m in range(1, 31)]
    assert figures.rss_growth(rows) == pytest.approx(2.0)
    assert figures.rss_growth(rows[:9]) is None


def test_the_first_resource_to_run_out_is_named():
    rows = [_row(1, 80), _row(2, 80, pg_cpu_pct=95), _row(3, 80, daemon_cpu_pct=99)]
    assert figures.exhausted(rows, workers=1).startswith("PostgreSQL CPU")
    assert figures.exhausted(rows[:1], workers=1) is None


def test_the_pass_table_judges_each_criterion():
    table = figures.criteria(1000, 995, 0, [0.5], [0.1], [0.3], [])
    met = {c["criterion"]: c["met"] for c in table}
    assert met["offered reports acknowledged"] is True
    assert met["report → WebSocket p99"] is True
    assert met["daemon RSS growth after 10 min"] is None
    table = figures.criteria(1000, 900, 3, [1.5], [], [3.0], [])
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
    text = figures.svg(rows, "a <test>")
    assert text.startswith("<svg")
    assert "a &lt;test&gt;" in text
    assert text.count("<polyline") == 8  # offline lateness has no samples
