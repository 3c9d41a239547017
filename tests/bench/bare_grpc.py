"""grpclib's own ceiling on this machine: a server for our service definition that answers every
call at once, without validation, queueing or a database. `python -m tests.bench.bare_grpc PORT
[trio-asyncio]` prints "ready" once it listens.

The daemon's ingest figures are judged as a fraction of this one: what grpclib and betterproto2
cost per call is the floor under anything the daemon can do in one process. It runs on
asyncio's own loop (`tests.support.plain_asyncio`: with trio_asyncio imported, `asyncio.run`
would build trio-asyncio's loop, as it did for this ceiling and the load generators until
2026-12-03). With `trio-asyncio` the same server runs on the loop the daemon runs grpclib on
(`droneshield.aio_loop.open_loop`): what is left between that one and the daemon is the
daemon's own work, not the loop's.
"""

from __future__ import annotations

import sys

import trio
import trio_asyncio
from grpclib.server import Server

from droneshield.aio_loop import open_loop
from droneshield.ingest.proto.status import (
    BatchAck,
    DeviceStatus,
    DeviceStatusBatch,
    DeviceStatusServiceBase,
    StatusAck,
)
from tests.support import plain_asyncio


class _Bare(DeviceStatusServiceBase):
    async def send_status(self, message: DeviceStatus) -> StatusAck:
        return StatusAck(message="ok")

    async def send_status_batch(self, message: DeviceStatusBatch) -> BatchAck:
        return BatchAck(accepted=len(message.statuses))


async def _serve(port: int) -> None:
    server = Server([_Bare()])
    await server.start("127.0.0.1", port)
    print("ready", flush=True)
    await server.wait_closed()


async def _serve_on_trio_asyncio(port: int) -> None:
    async with open_loop():
        await trio_asyncio.aio_as_trio(_serve)(port)


if __name__ == "__main__":
    port, *loop = sys.argv[1:]
    if loop == ["trio-asyncio"]:
        trio.run(_serve_on_trio_asyncio, int(port))
    else:
        plain_asyncio.run(_serve(int(port)))
