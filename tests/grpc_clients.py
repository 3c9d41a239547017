"""Test helpers to talk to the daemon over a real gRPC channel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio_asyncio
from grpclib.client import Channel

from droneshield.ingest.proto.status import DeviceStatusServiceStub


@asynccontextmanager
async def grpclib_stub(port: int) -> AsyncIterator[DeviceStatusServiceStub]:
    """A grpclib stub whose calls are awaited from trio via `aio(...)`."""
    channel = Channel("127.0.0.1", port)
    try:
        yield DeviceStatusServiceStub(channel)
    finally:
        channel.close()


def aio(coro_fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    """Await an asyncio coroutine function from trio."""
    return trio_asyncio.aio_as_trio(coro_fn)(*args, **kwargs)
