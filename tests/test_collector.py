"""The garbage collector's settings for a long-lived heap (droneshield/collector.py)."""

from __future__ import annotations

import gc

import trio

from droneshield.config import YOUNG_THRESHOLD_DEFAULT


async def test_a_ready_daemon_has_frozen_its_start_up_heap_and_reports_gc_pauses(running, api):
    with trio.fail_after(20):
        await running.tracker.recovered.wait()
        gc.collect(0)
        metrics = (await api.get("/metrics")).text
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD_DEFAULT
    assert gc.get_freeze_count() > 0
    assert 'droneshield_gc_pause_seconds_count{generation="0"}' in metrics
