"""The emitter as a program (`python -m emitter …`) against a running daemon: real gRPC, real
PostgreSQL. Short runs, each bounded."""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio_asyncio

from droneshield import daemon
from droneshield.config import Settings
from droneshield.web.app import create_app
from emitter.serials import from_database
from emitter.versions import RELEASED

from .support.processes import eventually, free_port, spawn
from .test_ingest import add_software

EMITTER = (sys.executable, "-m", "emitter")


def _emitter(mode: str, port: int, database_url: str, *args: str) -> list[str]:
    return [
        *EMITTER,
        mode,
        *("--target", f"127.0.0.1:{port}", "--database-url", database_url, "--seed", "7"),
        *args,
    ]


async def _count(db, condition: str) -> int:  # type: ignore[no-untyped-def]
    return await db.fetchval(f"SELECT count(*) FROM sensor WHERE {condition}")


async def test_compat_mode_reports_arrive_and_versions_never_go_backwards(
    running, db, sensors, database_url
):
    await add_software(db, *RELEASED)
    argv = _emitter("compat", running.grpc_port, database_url, "--interval", "0.02")
    with trio.fail_after(30):
        async with spawn([*argv, "--limit", "3"]) as emitter:
            await eventually(partial(_on_the_last_version, db, 3))
            assert await emitter.stop() == 0
    assert await _count(db, "last_seen_at IS NULL") == len(sensors) - 3
    await _assert_compat_history(db, 3)


async def test_compat_mode_starts_each_sensor_on_1_0_0_though_its_first_reports_failed(
    aio_loop, settings, db, sensors, database_url, nursery
):
    """Reports sent while the daemon is not there yet fail; a sensor's first report the daemon
    gets is still v1.0.0 (the emitter moved a sensor on whether its report arrived or not)."""
    await add_software(db, *RELEASED)
    port = free_port()
    argv = _emitter("compat", port, database_url, "--interval", "0.02", "--limit", "3")
    with trio.fail_after(40):
        async with spawn([*argv, "--backoff-base", "0.01", "--backoff-max", "0.5"]) as emitter:
            # No sensor has been answered yet, so each is still to send its first report.
            for failed in await emitter.wait_for_all("→ UNREACHABLE", 8):
                assert " v1.0.0 → UNREACHABLE" in failed, failed
            await nursery.start(daemon.run, settings.replace(grpc_port=port), database_url)
            await eventually(partial(_on_the_last_version, db, 3))
            assert await emitter.stop() == 0
    await _assert_compat_history(db, 3)


async def _on_the_last_version(db, count: int) -> bool:  # type: ignore[no-untyped-def]
    return await _count(db, f"version = '{RELEASED[-1]}'") == count


async def _assert_compat_history(db, count: int) -> None:  # type: ignore[no-untyped-def]
    """`count` sensors reported; each started on 1.0.0 and never went back."""
    rows = await db.fetch(
        "SELECT s.serial, e.old, e.new FROM sensor_event e JOIN sensor s ON s.id = e.sensor_id "
        "WHERE e.kind = 'version' ORDER BY e.id"
    )
    history: dict[str, list[str]] = {}
    for row in rows:
        previous = history.setdefault(row["serial"], [])
        assert row["old"] == (previous[-1] if previous else None)
        previous.append(row["new"])
    assert len(history) == count
    for serial, versions in history.items():
        assert versions[0] == "1.0.0", serial
        ranks = [RELEASED.index(v) for v in versions]
        assert ranks == sorted(ranks), (serial, versions)


async def test_fleet_mode_heartbeats_upgrades_and_leaves_some_sensors_silent(
    running, db, sensors, database_url
):
    await add_software(db, *RELEASED)  # not 4.0.0: the fleet upgrades to it before its upload
    argv = _emitter(
        "fleet",
        running.grpc_port,
        database_url,
        *("--interval", "0.2", "--never", "0.3", "--churn", "0.2", "--silence", "0.5"),
        *("--upgrade-every", "0.5", "--report-every", "0.5"),
    )
    with trio.fail_after(40):
        async with spawn(argv) as emitter:
            line = await emitter.wait_for("never report")
            assert "10 sensors (3 never report)" in line

            async def reporting_sensors_seen() -> bool:
                return await _count(db, "last_seen_at IS NOT NULL") == 7

            await eventually(reporting_sensors_seen)
            census = await emitter.wait_for("v4.0.0")  # an upgrade to an unreleased version
            assert re.search(r"OK \d+", census)
            assert await emitter.stop() == 0
    assert await _count(db, "last_seen_at IS NULL") == 3
    assert await _count(db, "version = '4.0.0'") == 0  # never uploaded, so never stored
    upgrades = await db.fetch("SELECT old, new FROM sensor_event WHERE kind = 'version'")
    assert any(u["old"] is not None for u in upgrades)
    for upgrade in upgrades:
        if upgrade["old"] is not None:
            assert RELEASED.index(upgrade["new"]) > RELEASED.index(upgrade["old"])


def _outcomes(census: str) -> dict[str, int]:
    """`… fleet: OK 120, UNREACHABLE 3; 0 silent now; …` → {"OK": 120, "UNREACHABLE": 3}."""
    head = re.search(r"fleet: (OK [^;]*);", census)[1]
    return {code: int(n) for code, n in (pair.split() for pair in head.split(", "))}


def _fields(line: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in line.split()[1:])


async def _load(running, db, database_url, *args: str) -> tuple[list[dict], dict]:  # type: ignore[no-untyped-def]
    await add_software(db, *RELEASED)
    argv = _emitter(
        "load",
        running.grpc_port,
        database_url,
        *("--limit", "10", "--rate", "200", "--duration", "2.5", "--report-every", "0.5"),
        *args,
    )
    with trio.fail_after(30):
        async with spawn(argv) as emitter:
            assert await emitter.exited() == 0
    windows = [_fields(line) for line in emitter.lines if line.startswith("load ")]
    [total] = [_fields(line) for line in emitter.lines if line.startswith("load-total ")]
    assert await _count(db, "online") == 10
    return windows, total


async def test_load_mode_unary_reports_rate_errors_and_latency_percentiles(
    running, db, sensors, database_url
):
    windows, total = await _load(running, db, database_url, "--rpc", "unary")
    assert len(windows) >= 3
    # A half-second window may see no completed call on a loaded machine; none may see errors.
    assert all(w["errors"] == "0" for w in windows)
    assert any(float(w["reports_per_s"]) > 0 for w in windows)
    assert sum(int(w["reports"]) for w in windows) <= int(total["reports"])
    assert total["errors"] == "0"
    # Paced at 200/s: never faster (how close it gets depends on the machine's load; the
    # pacing arithmetic itself is tested in test_emitter_logic).
    assert 0 < float(total["reports_per_s"]) <= 220
    assert 0 < float(total["p50_ms"]) <= float(total["p95_ms"]) <= float(total["p99_ms"])


async def test_load_mode_batch_sends_batches_at_the_target_rate(running, db, sensors, database_url):
    _, total = await _load(
        running, db, database_url, "--rpc", "batch", "--batch-size", "5", "--concurrency", "2"
    )
    assert total["errors"] == "0"
    assert total["rejected"] == "-"
    assert int(total["reports"]) == 5 * int(total["rpcs"])
    assert 0 < float(total["reports_per_s"]) <= 240  # paced, never faster


@asynccontextmanager
async def _daemon(settings: Settings, database_url: str) -> AsyncIterator[daemon.Running]:
    async with trio.open_nursery() as nursery:
        yield await nursery.start(daemon.run, settings, database_url)
        nursery.cancel_scope.cancel()


async def test_emitter_backs_off_while_the_daemon_is_down_and_resumes_when_it_returns(
    aio_loop, db, sensors, database_url, settings
):
    settings = settings.replace(grpc_port=free_port())
    argv = _emitter(
        "fleet",
        settings.grpc_port,
        database_url,
        *("--interval", "0.1", "--never", "0", "--churn", "0", "--report-every", "0.2"),
        *("--backoff-base", "0.1", "--backoff-max", "0.8"),
    )
    with trio.fail_after(60):
        async with spawn(argv) as emitter:
            async with _daemon(settings, database_url):

                async def all_seen() -> bool:
                    return await _count(db, "last_seen_at IS NOT NULL") == len(sensors)

                await eventually(all_seen)
                stopped = len(emitter.lines)
            lines = await emitter.wait_for_all("backing off", 6, start=stopped)
            pauses = [float(re.search(r"backing off ([\d.]+) s", line)[1]) for line in lines]
            # Each pause is in [step/2, step], step = min(0.8, 0.1 * 2^attempt): the run starts
            # at the base and, failures going on, reaches the cap's band (a call still in flight
            # when the daemon stopped may succeed and restart the run, early on).
            assert all(p <= 0.8 for p in pauses), pauses
            assert min(pauses) <= 0.1, pauses
            assert pauses[-1] >= 0.4, pauses
            # One probe per pause reaches for the daemon, not every due sensor: failures are
            # those in flight when it stopped plus about one per pause.
            census = await emitter.wait_for("fleet: OK", start=emitter.lines.index(lines[-1]))
            pauses_so_far = sum("backing off" in line for line in emitter.lines[stopped:])
            outcomes = _outcomes(census)
            failures = sum(n for code, n in outcomes.items() if code != "OK")
            assert failures <= pauses_so_far + len(sensors) + 1, census
            restart_mark = await db.fetchval("SELECT clock_timestamp()")
            resumed_from = len(emitter.lines)
            async with _daemon(settings, database_url):
                await emitter.wait_for("answering again", start=resumed_from)

                async def all_seen_again() -> bool:
                    return await _count(db, f"last_seen_at > '{restart_mark.isoformat()}'") == len(
                        sensors
                    )

                await eventually(all_seen_again)
            assert await emitter.stop() == 0


def _has_upload_route() -> bool:
    app = create_app(Settings(), pool=None)
    return any(rule.rule == "/upload" for rule in app.url_map.iter_rules())


@pytest.mark.skipif(not _has_upload_route(), reason="POST /upload is not in this build yet")
async def test_demo_uploads_store_a_release_for_every_version_the_emitter_sends(running, db):
    argv = [*EMITTER, "demo-uploads", "--url", f"http://127.0.0.1:{running.http_port}"]
    with trio.fail_after(30):
        for _ in range(2):  # the second run finds the same content stored: idempotent
            async with spawn(argv) as uploads:
                assert await uploads.exited() == 0, uploads.output()
    stored = await db.fetch("SELECT version FROM software ORDER BY version")
    assert [r["version"] for r in stored] == sorted(RELEASED)


async def test_demo_uploads_write_valid_pdfs_for_manual_upload(tmp_path):
    with trio.fail_after(30):
        async with spawn([*EMITTER, "demo-uploads", "--out", str(tmp_path)]) as uploads:
            assert await uploads.exited() == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(f"software_v{v}.pdf" for v in RELEASED)
    assert all((tmp_path / n).read_bytes().startswith(b"%PDF-1.4") for n in names)


async def test_the_emitter_reads_only_sensors_in_service(running, db, sensors, database_url):
    """A retired sensor's reports are refused (NOT_FOUND): the emitter leaves it out."""
    await db.execute("UPDATE sensor SET retired_at = now() WHERE serial = $1", sensors[0])
    read = await trio_asyncio.aio_as_trio(from_database)(database_url, None)
    assert sensors[0] not in read
    assert set(sensors[1:]) <= set(read)
