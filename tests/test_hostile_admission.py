"""Connection admission on both ports, on real sockets from several loopback addresses (all of
127/8 is this host on Linux): caps per address and per port close a connection as soon as it
is accepted, before a byte is read or sent, without touching other addresses; a freed slot is
reused; an address whose connection broke a frame budget is refused for the penalty.

The daemon runs in the test's trio loop, so once a client has seen its connection closed,
`wait_all_tasks_blocked` means the daemon has finished with it too (its slot is free)."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from h2.errors import ErrorCodes
from h2.events import RemoteSettingsChanged

from droneshield.config import Settings

from .support.grpc_clients import send
from .support.h2_attacks import ATTACKER, ATTACKS, H2Client

PER_ADDRESS = 2
HTTP_MAX = 4
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(
        grpc_max_connections_per_address=PER_ADDRESS,
        grpc_max_pings=20,
        grpc_budget_penalty=600.0,
        http_max_connections=HTTP_MAX,
        http_max_connections_per_address=PER_ADDRESS,
    )


async def closed_unread(port: int, source: str, request: bytes = b"") -> bool:
    """Whether a connection from `source` is closed by the server without a byte sent back."""
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
    try:
        await stream.send_all(request)
        return await stream.receive_some() == b""
    except trio.BrokenResourceError:  # reset: closed with our bytes unread
        return True
    finally:
        await stream.aclose()


async def http_held(port: int, source: str) -> trio.SocketStream:
    """A keep-alive connection from `source` that has had one answer (so it was admitted)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
    await stream.send_all(HEALTHZ)
    answer = await stream.receive_some()
    assert answer.startswith(b"HTTP/1.1 200"), answer
    return stream


async def http_release(stream: trio.SocketStream) -> None:
    """End a held connection: the server closes it after a `Connection: close` exchange, and
    its slot is free once that close is through."""
    await stream.send_all(HEALTHZ.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    while await stream.receive_some():
        pass
    await stream.aclose()
    await trio.testing.wait_all_tasks_blocked()


async def grpc_held(port: int, source: str) -> H2Client:
    """An HTTP/2 connection from `source` that has the server's SETTINGS (it was admitted)."""
    client = await H2Client.connect(port, source)
    assert await client.receive()
    assert any(isinstance(event, RemoteSettingsChanged) for event in client.events)
    return client


async def test_http_connections_beyond_one_address_cap_are_closed_unread(running):
    with trio.fail_after(10):
        held = [await http_held(running.http_port, ATTACKER) for _ in range(PER_ADDRESS)]
        assert await closed_unread(running.http_port, ATTACKER, HEALTHZ)
        other = await http_held(running.http_port, "127.0.0.3")  # another address is served
        await http_release(held.pop())
        held.append(await http_held(running.http_port, ATTACKER))  # the freed slot
        for stream in (*held, other):
            await stream.aclose()


async def test_http_connections_beyond_the_port_cap_are_closed_and_freed_slots_reused(running):
    sources = [f"127.0.0.{n}" for n in range(2, 2 + HTTP_MAX)]
    with trio.fail_after(10):
        held = [await http_held(running.http_port, source) for source in sources]
        assert await closed_unread(running.http_port, "127.0.0.99", HEALTHZ)
        for stream in held[:2]:
            await http_release(stream)
        held[:2] = [await http_held(running.http_port, "127.0.0.99") for _ in range(2)]
        assert await closed_unread(running.http_port, "127.0.0.100", HEALTHZ)
        for stream in held:
            await stream.aclose()


async def test_grpc_connections_beyond_one_address_cap_are_closed_unread(running, sensors):
    with trio.fail_after(10):
        held = [await grpc_held(running.grpc_port, ATTACKER) for _ in range(PER_ADDRESS)]
        assert await closed_unread(running.grpc_port, ATTACKER)
        ack = await send(running.grpc_port, sensors[0], "v1.0.0")  # from 127.0.0.1
        assert ack.message.startswith("online")
        await held.pop().aclose()
        await trio.testing.wait_all_tasks_blocked()
        held.append(await grpc_held(running.grpc_port, ATTACKER))
        for client in held:
            await client.aclose()


async def test_address_that_broke_a_budget_is_refused_for_the_penalty(running, sensors):
    with trio.fail_after(10):
        client = await H2Client.connect(running.grpc_port, ATTACKER)
        await client.attack(ATTACKS["PING flood"])
        await client.aclose()
        assert client.goaway == ErrorCodes.ENHANCE_YOUR_CALM
        await trio.testing.wait_all_tasks_blocked()
        assert await closed_unread(running.grpc_port, ATTACKER)
        await (await grpc_held(running.grpc_port, "127.0.0.3")).aclose()
        ack = await send(running.grpc_port, sensors[0], "v1.0.0")
        assert ack.message.startswith("online")
