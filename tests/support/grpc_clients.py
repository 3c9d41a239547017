"""Test helpers to talk to the daemon over real gRPC channels: grpclib (asyncio, awaited from trio
through trio-asyncio) and the official grpcio client (blocking, run in a worker thread)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar

import grpc
import trio
import trio_asyncio
from grpclib.client import Channel
from grpclib.encoding.base import CodecBase

from droneshield.ingest.proto.status import (
    BatchAck,
    DeviceStatus,
    DeviceStatusBatch,
    DeviceStatusServiceStub,
    StatusAck,
)

T = TypeVar("T")

SEND_STATUS: Final = "/status.DeviceStatusService/SendStatus"
SEND_BATCH: Final = "/status.DeviceStatusService/SendStatusBatch"


@asynccontextmanager
async def grpclib_stub(port: int) -> AsyncIterator[DeviceStatusServiceStub]:
    channel = Channel("127.0.0.1", port)
    try:
        yield DeviceStatusServiceStub(channel)
    finally:
        channel.close()


class _RawCodec(CodecBase):
    """Sends bytes as they are and returns the answer's bytes: a client that can send anything."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        return message

    def decode(self, data: bytes, message_type: Any) -> bytes:
        return data


@asynccontextmanager
async def raw_channel(port: int) -> AsyncIterator[Channel]:
    """A channel whose calls send bytes as they are: malformed requests, or requests
    written when the test decides."""
    channel = Channel("127.0.0.1", port, codec=_RawCodec())
    try:
        yield channel
    finally:
        channel.close()


def aio(fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> Awaitable[T]:
    """Await an asyncio coroutine function from trio (needs the `aio_loop` fixture)."""
    return trio_asyncio.aio_as_trio(fn)(*args, **kwargs)


async def send(port: int, serial: str, version: str = "") -> StatusAck:
    async with grpclib_stub(port) as stub:
        return await aio(stub.send_status, DeviceStatus(serial=serial, software_version=version))


async def send_batch(port: int, pairs: list[tuple[str, str]]) -> BatchAck:
    statuses = [DeviceStatus(serial=s, software_version=v) for s, v in pairs]
    async with grpclib_stub(port) as stub:
        return await aio(stub.send_status_batch, DeviceStatusBatch(statuses=statuses))


async def grpcio_send(port: int, serial: str, version: str) -> StatusAck:
    """SendStatus through the official grpcio client, as third-party sensors would."""

    def call() -> StatusAck:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            method = channel.unary_unary(
                SEND_STATUS,
                request_serializer=bytes,
                response_deserializer=StatusAck.parse,
            )
            return method(DeviceStatus(serial=serial, software_version=version), timeout=10)

    return await trio.to_thread.run_sync(call)
