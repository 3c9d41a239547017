"""Bad input over gRPC, on a real socket against the running daemon: random bytes, messages over
the size limit, malformed strings, the largest batch, too many streams. Each gets its status
(INVALID_ARGUMENT, RESOURCE_EXHAUSTED, NOT_FOUND or a per-item rejection), never UNKNOWN or
INTERNAL, and the daemon goes on serving and keeps what it accepted."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import pytest
import trio
import trio.testing
from grpclib import GRPCError, Status
from grpclib.client import Channel
from grpclib.const import Cardinality
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import HeadersFrame
from hypothesis import example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from droneshield.config import Settings
from droneshield.db import seed
from droneshield.ingest import wire
from droneshield.ingest.batch_count import OTHER_FIELDS_MAX, check_batch_count
from droneshield.ingest.codec import StrictCodec
from droneshield.ingest.proto.status import (
    DeviceStatus,
    DeviceStatusBatch,
    DeviceStatusServiceStub,
)
from droneshield.ingest.service import BATCH_MAX

from .support.fuzz import examples
from .support.grpc_clients import (
    SEND_BATCH,
    SEND_STATUS,
    aio,
    grpclib_stub,
    raw_channel,
    send,
    send_batch,
)
from .support.h2_attacks import ATTACKER, GRPC_HEADERS

MAX_MESSAGE = 256 * 1024  # bytes: a 10,000-status batch fits, a few more KiB do not
MAX_STREAMS = 4
ANSWERS = {Status.OK, Status.INVALID_ARGUMENT, Status.NOT_FOUND, Status.RESOURCE_EXHAUSTED}

# Protobuf wire fragments, written by hand so that the bytes are exactly what a broken or
# hostile client could send (betterproto2 would refuse to encode most of them).
random_messages = st.one_of(
    st.binary(max_size=300),
    # A well-formed DeviceStatus whose strings are arbitrary bytes, UTF-8 or not.
    st.builds(
        lambda a, b: b"\x0a" + bytes([len(a)]) + a + b"\x12" + bytes([len(b)]) + b,
        st.binary(max_size=100),
        st.binary(max_size=100),
    ),
    # A valid message cut short anywhere.
    st.integers(0, 21).map(lambda n: bytes(DeviceStatus("DS-00000001", "v1.0.0"))[:n]),
)


BODY_TIMEOUT = 10.0  # seconds; under the connection's idle timeout, so only the call is ended


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(
        ack_timeout=30.0,
        grpc_max_message_bytes=MAX_MESSAGE,
        grpc_max_streams=MAX_STREAMS,
        body_timeout=BODY_TIMEOUT,
    )


@pytest.fixture
def clock(mock_clock: trio.testing.MockClock) -> trio.testing.MockClock:
    """Trio's clock (asyncio's too, inside trio-asyncio) running at the wall clock's pace, for
    the daemon and the database; a test jumps it past the timeout it checks."""
    mock_clock.rate = 1.0
    return mock_clock


async def _answer(channel: Channel, method: str, payload: bytes) -> GRPCError | None:
    """asyncio side: the error the daemon answers `payload` with, None for OK."""
    async with channel.request(method, Cardinality.UNARY_UNARY, bytes, bytes) as stream:
        await stream.send_message(payload, end=True)
        try:
            await stream.recv_message()
        except GRPCError as exc:
            return exc
        return None


async def refusal(channel: Channel, method: str, payload: bytes) -> GRPCError | None:
    """The error the daemon answers `payload` with, None for OK."""
    with trio.fail_after(20):
        return await aio(_answer, channel, method, payload)


async def call_raw(channel: Channel, method: str, payload: bytes) -> Status:
    """The status the daemon answers `payload` with."""
    error = await refusal(channel, method, payload)
    return Status.OK if error is None else error.status


async def assert_still_serving(port: int, serial: str) -> None:
    with trio.fail_after(20):
        ack = await send(port, serial, "v1.0.0")
    assert ack.message.startswith("online")


@hypothesis_settings(max_examples=500, deadline=None)
@example(b"\x08\x01", DeviceStatus)  # serial with a varint's wire type
@example(b"\x0a\x02\x08\x01", DeviceStatusBatch)  # the same, one level down
@example(b"\x1b\x1c\x1d\x00\x00\x00\x00", DeviceStatus)  # unknown fields: fine
@given(payload=random_messages, message_type=st.sampled_from([DeviceStatus, DeviceStatusBatch]))
def test_codec_parses_any_bytes_or_refuses_them_as_invalid_argument(payload, message_type):
    try:
        message = StrictCodec().decode(payload, message_type)
    except GRPCError as exc:
        refused = exc.status
    else:
        refused = None
        statuses = message.statuses if isinstance(message, DeviceStatusBatch) else [message]
        for status in statuses:
            assert isinstance(status, DeviceStatus)
            assert isinstance(status.serial, str)
            assert isinstance(status.software_version, str)
    assert refused in (None, Status.INVALID_ARGUMENT)


async def test_a_message_announced_over_the_limit_is_refused_before_it_is_sent(
    running, db, sensors
):
    """The limit holds from the length prefix: the daemon does not wait for (and buffer) the
    gigabyte a client announces, it answers at once."""
    announced = (1 << 30).to_bytes(4, "big")

    async def call() -> Status:
        # The request never ends, so the client's stream raises the status on the way out too.
        try:
            async with channel.request(SEND_BATCH, Cardinality.UNARY_UNARY, bytes, bytes) as stream:
                await stream.send_request()
                await stream._stream.send_data(b"\x00" + announced + b"\x0a" * 1024)  # no more
                await stream.recv_message()
        except GRPCError as exc:
            return exc.status
        return Status.OK

    async with raw_channel(running.grpc_port) as channel:
        with trio.fail_after(20):
            assert await aio(call) is Status.RESOURCE_EXHAUSTED
    await assert_still_serving(running.grpc_port, sensors[0])


async def test_a_message_that_stalls_is_ended_after_the_body_timeout_and_others_are_served(
    clock, running, db, sensors
):
    """A client that sends all but the end of a message keeps the call open for as long as it
    likes; what arrived was held for good, on every stream it opened."""
    length = 64 * 1024
    report = bytes(DeviceStatus(sensors[0], "v1.0.0"))

    async def stall() -> tuple[GRPCError | None, GRPCError | None, GRPCError | None]:
        stalled = during = None
        try:
            async with channel.request(SEND_BATCH, Cardinality.UNARY_UNARY, bytes, bytes) as stream:
                await stream.send_request()
                await stream._stream.send_data(
                    b"\x00" + length.to_bytes(4, "big") + b"\x0a" * (length - 1)  # no more
                )
                # Served on another stream meanwhile: the stalled call's handler waits.
                during = await _answer(channel, SEND_STATUS, report)
                clock.jump(BODY_TIMEOUT)
                await stream.recv_message()
        except GRPCError as exc:
            stalled = exc
        return stalled, during, await _answer(channel, SEND_STATUS, report)

    async with raw_channel(running.grpc_port) as channel:
        with trio.fail_after(30):
            stalled, during, after = await aio(stall)
    assert stalled is not None
    assert stalled.status is Status.DEADLINE_EXCEEDED
    assert "did not arrive within 10.0 s" in str(stalled.message)
    assert during is after is None  # OK, on the same connection


async def test_random_bytes_get_a_status_never_unknown_and_the_daemon_keeps_serving(
    running, sensors
):
    payloads = examples(random_messages, 120)
    answers: dict[Status, int] = {}
    async with raw_channel(running.grpc_port) as channel:
        for payload in payloads:
            for method in (SEND_STATUS, SEND_BATCH):
                status = await call_raw(channel, method, payload)
                assert status in ANSWERS, (method, payload, status)
                answers[status] = answers.get(status, 0) + 1
    assert answers[Status.INVALID_ARGUMENT] > 0
    await assert_still_serving(running.grpc_port, sensors[0])


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (bytes(DeviceStatus("", "")), "empty serial"),
        (bytes(DeviceStatus("DS-0000\x0001", "v1.0.0")), "NUL in the serial"),
        (bytes(DeviceStatus("DS-0000\x1b[2J", "v1.0.0")), "escape sequence in the serial"),
        (bytes(DeviceStatus("DS-00000001\n", "v1.0.0")), "newline in the serial"),
        (b"\x0a\x0bDS-0000\xff\xfe01", "serial is not UTF-8"),
        (b"\x0a\x0bDS-00000001\x12\x03\xc3\x28x", "version is not UTF-8"),
        (b"\x0a\x0bDS-00000001\x12\x10v1.0.0", "version cut short"),
        (b"\x0a\xff\xff\xff\xff\x0f", "length beyond the message"),
    ],
)
async def test_malformed_status_is_invalid_argument(running, db, sensors, payload, why):
    async with raw_channel(running.grpc_port) as channel:
        assert await call_raw(channel, SEND_STATUS, payload) is Status.INVALID_ARGUMENT, why
    assert await db.fetchval("SELECT count(*) FROM sensor WHERE online") == 0
    await assert_still_serving(running.grpc_port, sensors[0])


async def test_batch_lists_bad_serials_by_index_and_commits_the_rest(running, db, sensors):
    pairs = [
        (sensors[0], ""),
        ("", "v1.0.0"),
        ("DS-\x00", "v1.0.0"),
        ("é-unicode", "v1.0.0"),
        ("x" * 129, "v1.0.0"),
        (sensors[1], "\x00not-a-version"),
        ("DS-99999999", "v1.0.0"),
    ]
    with trio.fail_after(20):
        ack = await send_batch(running.grpc_port, pairs)
    assert ack.accepted == 2
    assert [(r.index, r.code) for r in ack.rejected] == [
        (0, "VERSION_NOT_STORED"),
        (1, "INVALID_ARGUMENT"),
        (2, "INVALID_ARGUMENT"),
        (3, "INVALID_ARGUMENT"),
        (4, "INVALID_ARGUMENT"),
        (5, "VERSION_NOT_STORED"),
        (6, "NOT_FOUND"),
    ]
    online = await db.fetch("SELECT serial FROM sensor WHERE online ORDER BY serial")
    assert [r["serial"] for r in online] == sensors[:2]


async def test_one_non_utf8_string_makes_the_whole_batch_invalid(running, db, sensors):
    good = bytes(DeviceStatusBatch([DeviceStatus(sensors[0], "v1.0.0")]))
    broken = good + b"\x0a\x04\x0a\x02\xff\xff"  # a second status whose serial is not UTF-8
    async with raw_channel(running.grpc_port) as channel:
        assert await call_raw(channel, SEND_BATCH, broken) is Status.INVALID_ARGUMENT
        assert await call_raw(channel, SEND_BATCH, good) is Status.OK
    assert await db.fetchval("SELECT count(*) FROM sensor WHERE online") == 1


async def test_message_over_the_limit_is_resource_exhausted_and_the_next_call_is_served(
    running, db, sensors
):
    status = DeviceStatus(sensors[0], "v1.0.0")
    huge = bytes(DeviceStatusBatch([status] * (MAX_MESSAGE // len(bytes(status)))))
    assert len(huge) > MAX_MESSAGE
    async with raw_channel(running.grpc_port) as channel:
        assert await call_raw(channel, SEND_BATCH, huge) is Status.RESOURCE_EXHAUSTED
        assert await call_raw(channel, SEND_STATUS, b"\x0a" * MAX_MESSAGE * 2) is (
            Status.RESOURCE_EXHAUSTED
        )
        assert await call_raw(channel, SEND_STATUS, bytes(status)) is Status.OK
    assert await db.fetchval("SELECT count(*) FROM sensor WHERE online") == 1


# Top-level fields of a DeviceStatusBatch: a status, and fields it does not have, one of each
# wire type (a group holding what would be a status at the top level).
STATUS = b"\x0a\x00"
UNKNOWN_FIELDS = [
    b"\x10\x96\x01",  # field 2, varint
    b"\x19" + bytes(8),  # field 3, fixed64
    b"\x22\x03abc",  # field 4, length-delimited
    b"\x2d" + bytes(4),  # field 5, fixed32
    b"\x33\x0a\x00\x34",  # field 6, a group
]
# Past the limit, behind a field the batch does not have: the count once stopped at such a
# field, and the parser built every status (4 MB of them: 2.6 s of the event loop, ~210 MB).
LEADING_UNKNOWN = UNKNOWN_FIELDS[0] + STATUS * (MAX_MESSAGE // len(STATUS) - 2)


@given(fields=st.lists(st.sampled_from([STATUS, *UNKNOWN_FIELDS]), max_size=40))
def test_the_count_agrees_with_the_parser_whatever_else_the_batch_holds(fields):
    data = b"".join(fields)
    limit = 5
    # As the daemon parses it (betterproto2's parser reads a group's insides as fields).
    if len(StrictCodec().decode(data, wire.DeviceStatusBatch).statuses) > limit:
        with pytest.raises(GRPCError, match=f"more than {limit} statuses in the batch"):
            check_batch_count(data, limit)
    else:
        check_batch_count(data, limit)


def test_the_count_stops_at_the_first_status_over_the_limit():
    # What follows that status is never read: it would be refused as malformed.
    data = LEADING_UNKNOWN[: len(UNKNOWN_FIELDS[0]) + len(STATUS) * 11] + b"\x12\xff\xff"
    with pytest.raises(GRPCError, match="more than 10 statuses"):
        check_batch_count(data, 10)


def test_fields_besides_statuses_are_limited_too():
    with pytest.raises(GRPCError, match=f"more than {OTHER_FIELDS_MAX} fields besides statuses"):
        check_batch_count(b"\x10\x00" * (OTHER_FIELDS_MAX + 1), 10)


@pytest.mark.parametrize(
    "data",
    [
        b"\x10\x80\x80",  # a varint cut short
        b"\x10" + b"\xff" * 10 + b"\x01",  # a varint over 10 bytes
        b"\x12\x05ab",  # a length past the end
        b"\x16\x00\x00",  # wire type 6
        b"\x10\x00\x34",  # a group ends that never started
        b"\x33\x10\x00",  # a group that never ends
        b"\x00\x00\x00",  # field number 0
    ],
)
def test_framing_protobuf_refuses_is_refused_by_the_count(data):
    with pytest.raises(GRPCError, match="malformed request") as counted:
        check_batch_count(data, 1)
    with pytest.raises(GRPCError) as parsed:
        StrictCodec().decode(data, wire.DeviceStatusBatch)
    assert counted.value.status is parsed.value.status is Status.INVALID_ARGUMENT


async def test_too_many_statuses_are_refused_by_the_count_whatever_precedes_them(
    running, db, sensors
):
    unknown_only = UNKNOWN_FIELDS[0] * (MAX_MESSAGE // len(UNKNOWN_FIELDS[0]))
    async with raw_channel(running.grpc_port) as channel:
        counted = await refusal(channel, SEND_BATCH, LEADING_UNKNOWN)
        flooded = await refusal(channel, SEND_BATCH, unknown_only)
    # The count's words: the handler's ("at most … per batch") mean the batch was parsed.
    assert counted is not None
    assert flooded is not None
    assert (counted.status, counted.message) == (
        Status.INVALID_ARGUMENT,
        f"more than {BATCH_MAX} statuses in the batch",
    )
    assert (flooded.status, flooded.message) == (
        Status.INVALID_ARGUMENT,
        f"more than {OTHER_FIELDS_MAX} fields besides statuses in the batch",
    )
    await assert_still_serving(running.grpc_port, sensors[0])


async def test_a_batch_with_fields_it_does_not_have_is_served(running, db, sensors):
    statuses = [bytes(DeviceStatusBatch([DeviceStatus(s, "v1.0.0")])) for s in sensors]
    padding = b"\x3a\xa0\x9c\x01" + bytes(20_000)  # field 7, long enough to be counted
    payload = b"".join(UNKNOWN_FIELDS) + padding + b"".join(statuses)
    assert len(payload) > 2 * BATCH_MAX
    async with raw_channel(running.grpc_port) as channel:
        assert await call_raw(channel, SEND_BATCH, payload) is Status.OK
    assert await db.fetchval("SELECT count(*) FROM sensor WHERE online") == len(sensors)


async def test_batch_of_10000_is_committed_whole(running, db):
    await seed.seed(db, 10_000)
    pairs = [(seed.serial_for(n), "v1.0.0") for n in range(1, 10_001)]
    assert len(bytes(DeviceStatusBatch([DeviceStatus(*p) for p in pairs]))) <= MAX_MESSAGE
    with trio.fail_after(60):
        ack = await send_batch(running.grpc_port, pairs)
    assert ack.accepted == 10_000
    assert {r.code for r in ack.rejected} == {"VERSION_NOT_STORED"}
    assert await db.fetchval("SELECT count(*) FROM sensor WHERE online") == 10_000


async def _h2_client(port: int) -> tuple[trio.SocketStream, h2.connection.H2Connection, int]:
    """A raw HTTP/2 client past the settings exchange, and the server's stream limit; from
    another address than the well-behaved clients (one that breaks a budget is paused)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=ATTACKER)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    # The server answers a ping after every SETTINGS frame it sent on connecting.
    conn.ping(b"settled?")
    await stream.send_all(conn.data_to_send())
    limit, settled = 0, False
    while not settled:
        for event in conn.receive_data(await stream.receive_some()):
            if isinstance(event, h2.events.RemoteSettingsChanged):
                changed = event.changed_settings.get(SettingCodes.MAX_CONCURRENT_STREAMS)
                limit = limit if changed is None else changed.new_value
            settled = settled or isinstance(event, h2.events.PingAckReceived)
        await stream.send_all(conn.data_to_send())
    return stream, conn, limit


async def test_server_announces_its_stream_limit_and_drops_a_client_that_exceeds_it(
    running, sensors
):
    with trio.fail_after(20):
        stream, conn, limit = await _h2_client(running.grpc_port)
        assert limit == MAX_STREAMS
        # Written frame by frame: h2 would refuse to open more streams than the server allows.
        for stream_id in range(1, 2 * (MAX_STREAMS + 1), 2):
            frame = HeadersFrame(
                stream_id, conn.encoder.encode(GRPC_HEADERS), flags=["END_HEADERS"]
            )
            await stream.send_all(frame.serialize())
        while await stream.receive_some():  # the server ends the connection
            pass
        await stream.aclose()
    await assert_still_serving(running.grpc_port, sensors[0])


async def _until_ping_ack(stream: trio.SocketStream, conn: h2.connection.H2Connection) -> list:
    """Frames the server sent until it acknowledged our last PING: it has read all sent before."""
    await stream.send_all(conn.data_to_send())
    events: list = []
    while not any(isinstance(e, h2.events.PingAckReceived) for e in events):
        data = await stream.receive_some()
        if not data:
            break
        events += conn.receive_data(data)
        await stream.send_all(conn.data_to_send())
    return events


async def test_a_client_resetting_calls_faster_than_they_end_is_sent_away(running, sensors):
    with trio.fail_after(20):
        stream, conn, _ = await _h2_client(running.grpc_port)
        # MAX_STREAMS calls whose handlers run, waiting for a message that never comes...
        opened = [conn.get_next_available_stream_id() + 2 * n for n in range(MAX_STREAMS)]
        for stream_id in opened:
            conn.send_headers(stream_id, GRPC_HEADERS)
        conn.ping(b"started?")
        await _until_ping_ack(stream, conn)
        # ...all reset, and a new call in the same write: the handlers are still being
        # cancelled when it arrives.
        for stream_id in opened:
            conn.reset_stream(stream_id)
        conn.send_headers(conn.get_next_available_stream_id(), GRPC_HEADERS)
        conn.ping(b"answered")
        events = await _until_ping_ack(stream, conn)
        await stream.aclose()
    goaway = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert [e.error_code for e in goaway] == [ErrorCodes.ENHANCE_YOUR_CALM]
    await assert_still_serving(running.grpc_port, sensors[0])


async def test_calls_beyond_the_stream_limit_wait_their_turn(running, db, sensors):
    async def report(stub: DeviceStatusServiceStub, serial: str) -> None:
        await aio(stub.send_status, DeviceStatus(serial, "v1.0.0"))

    with trio.fail_after(30):
        async with grpclib_stub(running.grpc_port) as stub, trio.open_nursery() as nursery:
            for serial in sensors:  # ten calls on one connection, MAX_STREAMS at a time
                nursery.start_soon(report, stub, serial)
    assert await db.fetchval("SELECT count(*) FROM sensor WHERE online") == len(sensors)


@pytest.mark.parametrize(
    ("message_type", "payload"),
    [
        # 100,000 fields the server does not know, in a status, and in a status of a batch.
        (DeviceStatus, b"\x0a\x04DS-1" + b"\x18\x00" * 100_000),
        (DeviceStatusBatch, b"\x0a\xc6\x9a\x0c" + b"\x0a\x04DS-1" + b"\x18\x00" * 100_000),
    ],
    ids=["a status", "a status of a batch"],
)
def test_many_unknown_fields_are_refused_before_each_is_looked_at(message_type, payload):
    """A newer client's extra fields are a few bytes; 4 MB of them took ~1.2 s of the event
    loop and 220 MB to look at one by one (a Python object each)."""
    with pytest.raises(GRPCError) as refused:
        StrictCodec().decode(payload, message_type)
    assert refused.value.status is Status.INVALID_ARGUMENT
    assert "fields this server does not know" in (refused.value.message or "")
    few = b"\x0a\x04DS-1" + b"\x18\x00" * 100  # and a few are fine
    assert StrictCodec().decode(few, DeviceStatus).serial == "DS-1"
