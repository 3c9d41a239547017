"""Hostile clients on the gRPC port, on real sockets against the running daemon: rapid reset,
PING and SETTINGS floods, idle and half-open connections, too many connections, too many health
Watch streams, malformed framing and deadlines. Each meets its budget (GOAWAY
ENHANCE_YOUR_CALM and a closed connection, or a real status) and the daemon goes on serving.
Budgets are set small here so that each attack trips them in a bounded loop."""

from __future__ import annotations

import signal

import pytest
import trio
import trio.testing
import trio_asyncio
from grpclib import GRPCError, Status
from grpclib.client import Channel
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest
from h2.errors import ErrorCodes

from droneshield.config import Settings
from droneshield.ingest.batch_count import check_batch_count
from droneshield.ingest.proto.status import DeviceStatus, DeviceStatusBatch

from .support.grpc_clients import send
from .support.h2_attacks import ATTACKER, ATTACKS, GRPC_HEADERS, H2Client
from .support.processes import serve

BUDGET = 50  # frames of each kind per window
MAX_CONNECTIONS = 8
MAX_HEALTH_CALLS = 3


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(
        grpc_max_resets=BUDGET,
        grpc_max_pings=BUDGET,
        grpc_max_settings=BUDGET,
        grpc_budget_window=60.0,
        grpc_max_connections=MAX_CONNECTIONS,
        grpc_max_health_calls=MAX_HEALTH_CALLS,
        grpc_handshake_timeout=0.5,
        grpc_idle_timeout=1.0,
    )


async def assert_still_serving(port: int, serial: str) -> None:
    ack = await send(port, serial, "v1.0.0")
    assert ack.message.startswith("online")


@pytest.mark.parametrize("attack", list(ATTACKS))
async def test_frame_flood_gets_goaway_enhance_your_calm_and_a_closed_connection(
    running, sensors, attack
):
    with trio.fail_after(20):
        client = await H2Client.connect(running.grpc_port, ATTACKER)
        await client.attack(ATTACKS[attack])
        await client.aclose()
        assert client.goaway == ErrorCodes.ENHANCE_YOUR_CALM
        assert client.closed
        await assert_still_serving(running.grpc_port, sensors[0])  # from another address


async def test_connection_without_http2_preface_is_closed(running):
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", running.grpc_port)
        while await stream.receive_some():  # the server's SETTINGS, then the close
            pass
        await stream.aclose()


async def test_idle_connection_gets_goaway_no_error_and_is_closed(running, sensors):
    with trio.fail_after(10):
        client = await H2Client.connect(running.grpc_port)
        while await client.receive():
            pass
        await client.aclose()
        assert client.goaway == ErrorCodes.NO_ERROR


async def test_connections_beyond_the_cap_are_closed_and_freed_ones_are_reused(running, sensors):
    with trio.fail_after(20):
        held = [await H2Client.connect(running.grpc_port) for _ in range(MAX_CONNECTIONS)]
        for client in held:  # each has its SETTINGS: accepted
            await client.receive()
        refused = await H2Client.connect(running.grpc_port)
        while await refused.receive():
            pass
        await refused.aclose()
        assert refused.goaway is None  # closed before a word of HTTP/2
        for client in held:
            await client.aclose()
        await trio.testing.wait_all_tasks_blocked()  # the daemon has seen them go
        await assert_still_serving(running.grpc_port, sensors[0])


async def test_health_watch_streams_are_bounded(running, nursery):
    async def watch(channel: Channel, started: trio.Event) -> None:
        async with HealthStub(channel).Watch.open() as stream:
            await stream.send_message(HealthCheckRequest(), end=True)
            await stream.recv_message()  # SERVING
            started.set()
            await trio_asyncio.trio_as_aio(trio.sleep_forever)()

    with trio.fail_after(20):
        channel = Channel("127.0.0.1", running.grpc_port)
        try:
            for _ in range(MAX_HEALTH_CALLS):
                started = trio.Event()
                nursery.start_soon(trio_asyncio.aio_as_trio(watch), channel, started)
                await started.wait()
            with pytest.raises(GRPCError) as refused:
                await trio_asyncio.aio_as_trio(HealthStub(channel).Check)(HealthCheckRequest())
            assert refused.value.status == Status.RESOURCE_EXHAUSTED
        finally:
            channel.close()


async def _call(port: int, headers: list[tuple[str, str]], body: bytes) -> dict[str, str]:
    """One raw call; the trailers (or trailers-only headers) of its answer."""
    client = await H2Client.connect(port)
    stream_id = client.conn.get_next_available_stream_id()
    client.conn.send_headers(stream_id, headers)
    await client.send_body(stream_id, body)
    answer: dict[str, str] = {}
    while "grpc-status" not in answer and await client.receive():
        for event in client.events:
            answer.update(dict(getattr(event, "headers", None) or []))
        await client.flush()
    await client.aclose()
    return answer


MESSAGE = bytes(DeviceStatus("DS-00000001", "v1.0.0"))


@pytest.mark.parametrize(
    ("extra", "body", "status"),
    [
        ([], b"\x00" + (len(MESSAGE) + 10).to_bytes(4, "big") + MESSAGE, Status.INVALID_ARGUMENT),
        ([], b"\x00\x00\x00", Status.INVALID_ARGUMENT),
        ([], b"", Status.INVALID_ARGUMENT),
        (
            [("grpc-timeout", "1n")],
            b"\x00" + len(MESSAGE).to_bytes(4, "big") + MESSAGE,
            Status.DEADLINE_EXCEEDED,
        ),
        ([("grpc-timeout", "soon")], b"", Status.INVALID_ARGUMENT),
    ],
    ids=["prefix-longer-than-body", "cut-prefix", "empty-body", "timeout-1n", "timeout-garbage"],
)
async def test_malformed_framing_or_deadline_gets_a_real_status_and_no_traceback(
    running, sensors, caplog, extra, body, status
):
    with trio.fail_after(10):
        answer = await _call(running.grpc_port, GRPC_HEADERS + extra, body)
    assert answer["grpc-status"] == str(status.value)
    assert not [r for r in caplog.records if r.exc_info]


async def test_ack_echoes_at_most_64_characters_of_a_version(running, sensors):
    with trio.fail_after(10):
        ack = await send(running.grpc_port, sensors[0], "v" + "9" * 100_000)
    assert len(ack.message) < 200
    assert "…" in ack.message


async def test_batch_of_two_million_empty_statuses_is_refused_before_it_is_parsed(running, sensors):
    body = b"\x0a\x00" * 2_000_000
    headers = [(k, v.replace("SendStatus", "SendStatusBatch")) for k, v in GRPC_HEADERS]
    with trio.fail_after(20):
        answer = await _call(
            running.grpc_port, headers, b"\x00" + len(body).to_bytes(4, "big") + body
        )
    assert answer["grpc-status"] == str(Status.INVALID_ARGUMENT.value)
    assert answer["grpc-message"] == "more than 10000 statuses in the batch"  # before parsing


def test_batch_count_walks_only_batches_long_enough_to_exceed_the_limit():
    full = DeviceStatusBatch(statuses=[DeviceStatus(f"DS-{n:08d}", "v1.0.0") for n in range(100)])
    check_batch_count(bytes(full), 100)
    with pytest.raises(GRPCError, match="more than 99"):
        check_batch_count(bytes(full), 99)
    check_batch_count(b"\x0a\x00" * 100, 100)  # 200 bytes: cannot hold more than 100


SIGTERM_BOUND = 5.0  # seconds the issue allows for an exit after abuse


async def test_sigterm_after_floods_exits_within_five_seconds(database_url, tmp_path):
    async with serve(database_url, tmp_path) as daemon:
        with trio.fail_after(30):
            for attack in ATTACKS.values():
                client = await H2Client.connect(daemon.grpc_port, ATTACKER)
                await client.attack(attack)
                await client.aclose()
        daemon.spawned.process.send_signal(signal.SIGTERM)
        with trio.fail_after(SIGTERM_BOUND):
            assert await daemon.spawned.exited() == 0
