"""gRPC ingest against the running daemon: real channel, real PostgreSQL."""

from __future__ import annotations

import trio
from grpclib import GRPCError, Status

from droneshield.ingest.proto.status import DeviceStatus, DeviceStatusBatch

from .grpc_clients import aio, grpclib_stub


async def _add_software(db, version: str) -> None:  # type: ignore[no-untyped-def]
    await db.execute(
        "INSERT INTO software (version, filename, path, size_bytes, sha256) "
        "VALUES ($1, $2, $2, 1, $3)",
        version,
        f"v{version}.pdf",
        "0" * 64,
    )


async def test_report_marks_sensor_online_and_stores_uploaded_version(running, db, sensors):
    await _add_software(db, "1.2.3")
    with trio.fail_after(10):
        async with grpclib_stub(running.grpc_port) as stub:
            ack = await aio(stub.send_status, DeviceStatus(serial=sensors[0], software_version="v1.2.3"))
    assert ack.message == "ok: online, running v1.2.3"
    row = await db.fetchrow("SELECT * FROM sensor WHERE serial = $1", sensors[0])
    assert row["online"] is True
    assert row["last_seen_at"] is not None
    assert row["version"] == "1.2.3"
