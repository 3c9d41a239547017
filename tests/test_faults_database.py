"""Database faults while reports flow: connections killed by the server, and a real server
restart. The writer retries, callers wait or get UNAVAILABLE, /readyz follows the database, and
afterwards every acknowledged report is in the database."""

from __future__ import annotations

import gc
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing
import trio_asyncio

from droneshield import daemon
from droneshield.config import Settings
from droneshield.db import migrate, seed
from droneshield.db.pool import Connection, acquire, connect, open_pool
from droneshield.reports import TOO_LATE

from .support.flow import Flow, stored
from .support.grpc_clients import send
from .support.locks import another_waits_for_a_lock, cancel_lock_waiters
from .support.processes import eventually, private_postgres
from .support.releases import add_software

VERSION = "1.0.0"
SENSORS = 20_000  # more than any run sends: each serial is reported once
CALLERS = 16
KILLS = 3

_TERMINATE_OTHERS = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
"""


async def _provision(conn) -> list[str]:  # type: ignore[no-untyped-def]
    await seed.seed(conn, SENSORS)
    await add_software(conn, VERSION)
    return [seed.serial_for(n) for n in range(1, SENSORS + 1)]


async def test_connections_killed_mid_commit_lose_no_acknowledged_report(
    running, db, caplog, nursery
):
    caplog.set_level(logging.WARNING, logger="droneshield.writer")
    flow = Flow(running.grpc_port, await _provision(db), VERSION)
    killed = 0
    with trio.fail_after(60):
        nursery.start_soon(flow.run, CALLERS)
        for round in range(1, KILLS + 1):
            await flow.until(acked=100 * round)
            # Every sensor row locked: the writer's next statement blocks on it, so the kill
            # lands in the middle of a commit, not between two.
            async with db.transaction():
                await db.execute("SELECT 1 FROM sensor FOR UPDATE")

                await eventually(partial(another_waits_for_a_lock, db))
                killed += await db.fetchval(_TERMINATE_OTHERS)
        await flow.until(acked=100 * (KILLS + 1))
        nursery.cancel_scope.cancel()
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert killed >= KILLS
    assert len(retries) >= KILLS, "each kill should have failed a commit that was retried"
    assert set(flow.failures) <= {"UNAVAILABLE"}, flow.messages
    assert flow.acked <= await stored(db, VERSION)


async def _readiness(api: httpx.AsyncClient, status: int) -> dict:  # type: ignore[type-arg]
    """The body of the first /readyz answer with `status` (the caller bounds the wait)."""
    answers: list[httpx.Response] = []

    async def answered() -> bool:
        answers.append(await api.get("/readyz"))
        return answers[-1].status_code == status

    await eventually(answered)
    return answers[-1].json()


def _announcements_failed(caplog: pytest.LogCaptureFixture) -> int:
    return sum("announcing interest failed" in r.getMessage() for r in caplog.records)


async def test_postgres_restart_turns_readiness_red_then_green_and_loses_no_ack(
    aio_loop, tmp_path: Path, caplog
):
    settings = Settings(
        data_dir=tmp_path, http_port=0, grpc_port=0, ack_timeout=2.0, shutdown_grace=2.0
    )
    async with private_postgres() as server:
        url = server.url()
        async with connect(url) as conn:
            await migrate.migrate(conn)
            serials = await _provision(conn)
        with trio.fail_after(90):
            async with trio.open_nursery() as nursery:
                running = await nursery.start(daemon.run, settings, url)
                flow = Flow(running.grpc_port, serials, VERSION)
                base = f"http://127.0.0.1:{running.http_port}"
                async with httpx.AsyncClient(base_url=base, timeout=10) as api:
                    nursery.start_soon(flow.run, CALLERS)
                    await flow.until(acked=100)
                    assert (await api.get("/readyz")).status_code == 200
                    await server.stop()
                    red = await _readiness(api, 503)
                    # Views opening and closing while the relay cannot announce them: it
                    # waits out its backoff, announcing the latest (it once retried at once on
                    # every change, hundreds of times a second, each a warning).
                    failed_before = _announcements_failed(caplog)
                    for _ in range(100):
                        with running.hub.subscribe(["DS-00000001"]):
                            await trio.sleep(0.01)
                    retried = _announcements_failed(caplog) - failed_before
                    # Reports sent while the server is down wait, then are told to retry.
                    await flow.until(failed="UNAVAILABLE")
                    await server.start()
                    green = await _readiness(api, 200)
                    await flow.until(acked=len(flow.acked) + 100)
                nursery.cancel_scope.cancel()
        async with connect(url) as conn:
            held = await stored(conn, VERSION)
    assert red["error"]["code"] == "database_unavailable"
    assert retried <= 12, f"{retried} announcements in ~1 s of subscriptions"
    assert green == {"status": "ready"}
    assert set(flow.failures) == {"UNAVAILABLE"}, flow.messages
    # Told while its commit was retried, or when it outwaited its deadline in the queue.
    assert flow.messages["UNAVAILABLE"] in {"the database is unavailable; retry", TOO_LATE}
    assert flow.acked <= held


async def test_a_lost_connection_in_a_future_nobody_awaits_does_not_stop_the_loop(
    database_url, caplog
):
    # What asyncpg leaves behind when a connect is cancelled while PostgreSQL restarts: its SSL
    # probe's future, failed by connection_lost() after its caller gave up. trio-asyncio's
    # default handler re-raised it into the loop's nursery, which took the daemon down.
    with trio.fail_after(10):
        async with trio_asyncio.open_loop() as loop, open_pool(database_url, size=1) as pool:
            orphan = loop.create_future()
            orphan.set_exception(ConnectionError("unexpected connection_lost() call"))
            del orphan
            gc.collect()
            await trio.testing.wait_all_tasks_blocked()
            async with acquire(pool) as conn:
                assert await conn.fetchval("SELECT 1") == 1
    assert "unexpected connection_lost() call" in caplog.text


async def _acknowledged_behind_a_held_row(
    port: int, db: Connection, serial: str, retried: Callable[[], Awaitable[None]]
) -> None:
    """A report of `serial` while another transaction holds its row, freed once `retried`
    returns (the writer's statement failed and was tried again): answered once, stored."""
    acked: list[object] = []
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:

            async def report() -> None:
                acked.append(await send(port, serial, ""))

            async with db.transaction():
                await db.execute("SELECT 1 FROM sensor WHERE serial = $1 FOR UPDATE", serial)
                nursery.start_soon(report)
                await retried()
    assert len(acked) == 1
    assert await db.fetchval("SELECT online FROM sensor WHERE serial = $1", serial)


async def test_a_statement_cancelled_mid_commit_is_retried_and_the_report_acknowledged(
    running, db, sensors
):
    """pg_cancel_backend (or a role's statement_timeout) ends a statement, not the session:
    the writer retries it (it failed the batch as an internal error), as background tasks do
    (the history and summary tasks ended the daemon)."""

    async def cancelled_and_waiting_again() -> None:
        await eventually(partial(another_waits_for_a_lock, db))
        assert await cancel_lock_waiters(db) >= 1
        await eventually(partial(another_waits_for_a_lock, db))  # the retry

    await _acknowledged_behind_a_held_row(
        running.grpc_port, db, sensors[0], cancelled_and_waiting_again
    )


async def test_a_lock_timeout_is_retried_and_the_report_acknowledged(
    aio_loop, database_url, settings, nursery, db, sensors, caplog
):
    """A sensor's row held by another transaction (an operator's `psql`) past the writer's
    lock wait (`writer.LOCK_WAIT`, the connection's lock_timeout) fails the statement with
    55P03: the writer retries it until the row is free, as a cancelled one (a role's or a
    database's lock_timeout once failed the batch as an internal error). Here the sensor is
    set apart in the writer's side lane, whose statement then waits for the row again."""
    running = await nursery.start(daemon.run, settings, database_url)

    async def retrying() -> bool:
        set_apart = any("side lane" in r.getMessage() for r in caplog.records)
        return set_apart and await another_waits_for_a_lock(db)

    await _acknowledged_behind_a_held_row(
        running.grpc_port, db, sensors[0], partial(eventually, retrying)
    )


async def test_a_listing_the_database_ends_is_answered_503_not_500(api, db, sensors):
    """A listing's statement cancelled (a role's statement_timeout, an operator, or a
    deadlock PostgreSQL broke) may succeed when asked again: 503 with the database's code,
    not an internal error."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            answers: list[httpx.Response] = []

            async def search() -> None:
                answers.append(await api.get("/sensors", params={"q": "DS-0000000"}))

            async with db.transaction():
                await db.execute("LOCK TABLE sensor_search IN ACCESS EXCLUSIVE MODE")
                nursery.start_soon(search)
                await eventually(partial(another_waits_for_a_lock, db))
                assert await cancel_lock_waiters(db) >= 1
        again = await api.get("/sensors", params={"q": "DS-0000000"})
    [cancelled] = answers
    assert cancelled.status_code == 503, cancelled.text
    assert cancelled.json()["error"]["code"] == "database_unavailable"
    assert again.status_code == 200
