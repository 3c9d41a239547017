"""gRPC ingest against the running daemon: real channels, real PostgreSQL."""

from __future__ import annotations

import random
import string

import grpc
import pytest
import trio
from grpclib import GRPCError, Status

from droneshield import reports
from droneshield.domain import ECHO_MAX

from .support.grpc_clients import grpcio_send, send, send_batch
from .support.releases import add_software

# Valid semver, and past PostgreSQL's btree limit (2,704 bytes, after compression: random
# letters and digits barely compress) for the primary key of `unreleased_version`, where a
# version never uploaded is counted.
LONG_VERSION = "v1.0.0-" + "".join(random.Random(0).choices(string.ascii_letters, k=3_000))
LONG_BUT_STORABLE = "v1.0.0-" + "b" * 120  # within the cap, longer than an echo


async def sensor_row(db, serial: str):  # type: ignore[no-untyped-def]
    return await db.fetchrow("SELECT * FROM sensor WHERE serial = $1", serial)


async def test_report_marks_sensor_online_and_stores_uploaded_version(running, db, sensors):
    await add_software(db, "1.2.3")
    with trio.fail_after(10):
        ack = await send(running.grpc_port, sensors[0], "1.2.3")
    assert ack.message == "ok: online, running v1.2.3"
    row = await sensor_row(db, sensors[0])
    assert row["online"] is True
    assert row["last_seen_at"] is not None
    assert row["status_changed_at"] == row["last_seen_at"]
    assert row["version"] == "1.2.3"


async def test_leading_v_is_accepted_and_stored_canonical(running, db, sensors):
    await add_software(db, "2.0.0-rc.1")
    with trio.fail_after(10):
        ack = await send(running.grpc_port, sensors[0], "V2.0.0-rc.1")
    assert ack.message == "ok: online, running v2.0.0-rc.1"
    assert (await sensor_row(db, sensors[0]))["version"] == "2.0.0-rc.1"


async def test_grpcio_client_is_served(running, db, sensors):
    await add_software(db, "1.0.0")
    with trio.fail_after(10):
        ack = await grpcio_send(running.grpc_port, sensors[1], "v1.0.0")
    assert ack.message == "ok: online, running v1.0.0"
    assert (await sensor_row(db, sensors[1]))["online"] is True


async def test_grpcio_client_gets_not_found_for_unknown_serial(running, sensors):
    with trio.fail_after(10), pytest.raises(grpc.RpcError) as caught:
        await grpcio_send(running.grpc_port, "NOPE-1", "v1.0.0")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("serial", ["", "x" * 129, "DS-\u00e9", "tab\there", "nl\n"])
async def test_malformed_serial_is_invalid_argument(running, sensors, serial):
    with trio.fail_after(10), pytest.raises(GRPCError) as caught:
        await send(running.grpc_port, serial, "1.0.0")
    assert caught.value.status is Status.INVALID_ARGUMENT
    assert "printable ASCII" in caught.value.message


async def test_unknown_serial_is_not_found_and_creates_nothing(running, db, sensors):
    with trio.fail_after(10), pytest.raises(GRPCError) as caught:
        await send(running.grpc_port, "DS-99999999", "1.0.0")
    assert caught.value.status is Status.NOT_FOUND
    assert await db.fetchval("SELECT count(*) FROM sensor") == len(sensors)


@pytest.mark.parametrize(
    ("version", "why"),
    [
        ("1.0", "is not a semantic version"),
        ("v01.2.3", "is not a semantic version"),
        ("9.9.9", "v9.9.9 was never uploaded"),
        ("", "no software version reported"),
    ],
)
async def test_bad_or_unknown_version_keeps_sensor_online_and_version_unchanged(
    running, db, sensors, version, why
):
    await add_software(db, "1.0.0")
    with trio.fail_after(10):
        await send(running.grpc_port, sensors[0], "1.0.0")
        ack = await send(running.grpc_port, sensors[0], version)
    assert ack.message.startswith("online; ")
    assert why in ack.message
    row = await sensor_row(db, sensors[0])
    assert row["online"] is True
    assert row["version"] == "1.0.0"


async def test_batch_stores_good_reports_and_lists_bad_ones(running, db, sensors):
    await add_software(db, "1.0.0")
    with trio.fail_after(10):
        ack = await send_batch(
            running.grpc_port,
            [
                (sensors[0], "1.0.0"),
                ("", "1.0.0"),
                ("DS-99999999", "1.0.0"),
                (sensors[1], "7.7.7"),
                (sensors[2], "v1.0.0"),
            ],
        )
    assert ack.accepted == 3
    assert [(r.index, r.code) for r in ack.rejected] == [
        (1, "INVALID_ARGUMENT"),
        (2, "NOT_FOUND"),
        (3, "VERSION_NOT_STORED"),
    ]
    assert "v7.7.7 was never uploaded" in ack.rejected[2].reason
    rows = {r["serial"]: r for r in await db.fetch("SELECT * FROM sensor WHERE online")}
    assert set(rows) == {sensors[0], sensors[1], sensors[2]}
    assert rows[sensors[0]]["version"] == "1.0.0"
    assert rows[sensors[1]]["version"] is None


async def test_oversized_batch_is_invalid_argument(running, sensors):
    with trio.fail_after(20), pytest.raises(GRPCError) as caught:
        await send_batch(running.grpc_port, [(sensors[0], "1.0.0")] * 10_001)
    assert caught.value.status is Status.INVALID_ARGUMENT


async def test_transitions_are_recorded_once(running, db, sensors):
    await add_software(db, "1.0.0", "1.1.0")
    with trio.fail_after(10):
        for version in ("1.0.0", "1.0.0", "1.1.0", "1.1.0"):
            await send(running.grpc_port, sensors[0], version)
    events = await db.fetch("SELECT kind, old, new FROM sensor_event ORDER BY id")
    assert [tuple(e) for e in events] == [
        ("online", "never", "online"),
        ("version", None, "1.0.0"),
        ("version", "1.0.0", "1.1.0"),
    ]


async def test_a_version_too_long_is_answered_as_a_malformed_one_and_spares_its_batch(
    running, db, sensors
):
    """One long version once failed every report of its writer batch with INTERNAL."""
    await add_software(db, "1.0.0")
    # One call's two reports wait in the first writer lane and are committed in one batch.
    long_one, other = sensors[:2]
    with trio.fail_after(20):
        ack = await send_batch(running.grpc_port, [(long_one, LONG_VERSION), (other, "v1.0.0")])
        unary = await send(running.grpc_port, long_one, LONG_VERSION)
    assert ack.accepted == 2
    assert [(r.index, r.code) for r in ack.rejected] == [(0, "VERSION_NOT_STORED")]
    for answer in (ack.rejected[0].reason, unary.message):
        assert "longer than 128 characters; version not stored" in answer
        assert LONG_VERSION[: ECHO_MAX + 1] not in answer
    rows = {r["serial"]: r for r in await db.fetch("SELECT * FROM sensor WHERE online")}
    assert set(rows) == {long_one, other}
    assert (rows[long_one]["version"], rows[other]["version"]) == (None, "1.0.0")
    assert not await db.fetchval("SELECT count(*) FROM unreleased_version")


async def test_acks_repeat_a_long_version_only_in_part(running, sensors):
    with trio.fail_after(20):
        ack = await send_batch(running.grpc_port, [(sensors[0], LONG_BUT_STORABLE)])
        unary = await send(running.grpc_port, sensors[0], LONG_BUT_STORABLE)
    for answer in (ack.rejected[0].reason, unary.message):
        assert "was never uploaded" in answer
        assert "b" * (ECHO_MAX + 1) not in answer


def test_a_long_version_is_neither_parsed_nor_cached():
    """The cache is bounded by entries: it is bounded in bytes only if its keys are."""
    before = reports._canonical.cache_info()
    assert reports.check_version(LONG_VERSION)[0] is None
    assert reports._canonical.cache_info() == before
