"""The soak's machinery end to end, small: 10,000 sensors for 30 s through the gateway emitter,
with the daemon, WebSocket watchers, the webhook receiver and uploads, each in its own process.
It checks that every part reports and that the verification holds (nothing acknowledged lost,
every long silence alerted, nothing invented), not the figures: those depend on the machine."""

from __future__ import annotations

import json

import trio

from tests.soak.run import Options, run


async def test_a_small_soak_reports_every_figure_and_verifies(aio_loop, server_url, tmp_path):
    options = Options(
        sensors=10_000,
        interval=10.0,  # 1,000 reports/s; offline after 15 s, silences of 45 s on average
        minutes=0.5,
        period=10.0,
        clients=4,
        upload_every=10.0,
        out=tmp_path,
    )
    with trio.fail_after(240):
        report = await run(options, server_url)
    assert report["offered"] > 0
    assert report["acked"] > 0
    assert len(report["rows"]) >= 3
    assert any(r["ws_p99_ms"] is not None for r in report["rows"])
    assert all(r["daemon_rss_mb"] > 0 and r["db_mb"] > 0 for r in report["rows"])
    check = report["verification"]
    assert check["sampled"] > 0
    assert check["expected_offline"] > 0, "the run should hold silences past the timeout"
    assert check["posts"] > 0
    assert check["ok"], check
    assert {c["criterion"] for c in report["criteria"]} >= {"acknowledged reports lost"}
    assert json.loads((tmp_path / "soak.json").read_text())["offered"] == report["offered"]
    assert (tmp_path / "soak.svg").read_text().startswith("<svg")
