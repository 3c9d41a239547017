"""The soak's machinery end to end, small and short: 2,000 sensors heartbeating every 2 s for a
2 s warm-up and 6 measured seconds through the gateway emitter, with the daemon, WebSocket
watchers, the webhook receiver and uploads, each in its own process. It checks that every part
reports, that the warm-up is told apart from the steady state, and that the verification holds
(nothing acknowledged lost, every long silence alerted, nothing invented), not the figures: those
depend on the machine."""

from __future__ import annotations

import json

import trio

from tests.soak.run import Options, run


async def test_a_small_soak_reports_every_figure_and_verifies(aio_loop, server_url, tmp_path):
    options = Options(
        sensors=2_000,
        interval=2.0,  # 1,000 reports/s; offline after 3 s, silences of 9 s on average
        minutes=0.1,
        period=2.0,
        warmup=2.0,
        clients=2,
        upload_every=3.0,
        out=tmp_path,
    )
    with trio.fail_after(120):
        report = await run(options, server_url)
    assert report["offered"] > 0
    assert report["acked"] > 0
    rows = report["rows"]
    assert rows[0]["warmup"]
    assert sum(not r["warmup"] for r in rows) >= 2
    assert report["steady"]["from_minute"] is not None
    assert 0 < report["steady"]["offered"] < report["offered"]
    assert any(r["ws_p99_ms"] is not None for r in rows)
    assert all(r["daemon_rss_mb"] > 0 and r["db_mb"] > 0 for r in rows)
    check = report["verification"]
    assert check["sampled"] > 0
    assert check["expected_offline"] > 0, "the run should hold silences past the timeout"
    assert check["posts"] > 0
    assert check["ok"], check
    assert {c["criterion"] for c in report["criteria"]} >= {"acknowledged reports lost"}
    assert json.loads((tmp_path / "soak.json").read_text())["offered"] == report["offered"]
    assert (tmp_path / "soak.svg").read_text().startswith("<svg")
