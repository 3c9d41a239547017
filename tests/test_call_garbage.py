"""A gRPC call leaves nothing for the garbage collector: reference counting frees its stream when
it ends (real daemon, real gRPC channel, real PostgreSQL). A reference cycle per call made the
collector's young passes part of the unary latency tail (README, Benchmarks)."""

from __future__ import annotations

import gc

import trio
from grpclib import server
from grpclib.client import Channel, UnaryUnaryMethod

from droneshield.ingest.wire import DeviceStatus, StatusAck

from .support.grpc_clients import SEND_STATUS, aio

CALLS = 20
DEADLINE = 10.0  # seconds: calls with a deadline, as the fleet's clients make them


async def test_a_finished_call_leaves_no_stream_in_a_reference_cycle(running, sensors):
    channel = Channel("127.0.0.1", running.grpc_port)
    send_status = UnaryUnaryMethod(channel, SEND_STATUS, DeviceStatus, StatusAck)
    try:
        with trio.fail_after(30):
            gc.collect()
            gc.disable()
            try:
                for serial in sensors * (CALLS // len(sensors)):
                    status = DeviceStatus(serial=serial, software_version="1.0.0")
                    await aio(send_status, status, timeout=DEADLINE)
                gc.set_debug(gc.DEBUG_SAVEALL)  # keep what the collector finds unreachable
                gc.collect()
                cyclic = [o for o in gc.garbage if isinstance(o, server.Stream)]
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
                gc.enable()
    finally:
        channel.close()
    assert cyclic == []
