"""Bad input on `/ws`, over a real WebSocket against the running daemon: fuzzed messages, messages
around the size limit, subscriptions over the serial limit, a flood of subscriptions. Each gets
an `error` back or the documented close code; the connection (when it stays open) and the daemon
go on working. (tests/test_hub.py checks `messages.parse` itself against any input.)"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import trio
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed

from droneshield.config import Settings
from droneshield.domain import SensorState
from droneshield.web import messages
from droneshield.web.messages import Pong, ProtocolError

from .support.fuzz import examples
from .support.live_client import LiveClient, open_live
from .test_hub import subscribe_like

MAX_MESSAGE = 1024  # characters
MAX_SERIALS = 5
FLOOD = 2_000  # subscribe messages

client_messages = st.one_of(st.binary(max_size=300), st.text(max_size=300), subscribe_like)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(ws_max_message_bytes=MAX_MESSAGE, ws_max_serials=MAX_SERIALS)


def _answered(data: str | bytes) -> bool:
    """Whether the server answers this message (it answers all but a `pong`)."""
    try:
        return not isinstance(messages.parse(data, max_serials=MAX_SERIALS), Pong)
    except ProtocolError:
        return True


async def reply(client: LiveClient) -> dict:
    """The answer to the client's last message, past the totals and changes sent meanwhile."""
    while True:
        message = await client.receive()
        if message["type"] in ("error", "subscribed"):
            return message


async def assert_still_live(running, client: LiveClient, serial: str) -> None:  # type: ignore[no-untyped-def]
    await client.subscribe([serial])
    now = datetime.now(UTC)
    running.hub.publish([SensorState(1, serial, "1.0.0", "online", now, now)])
    sensor = await client.next("sensor")
    assert sensor["sensors"][0]["serial"] == serial


async def test_fuzzed_messages_each_get_an_answer_and_the_connection_keeps_working(running):
    sent = [data for data in examples(client_messages, 150) if _answered(data)]
    with trio.fail_after(60):
        async with open_live(running.http_port) as client:
            for data in sent:
                await client.send(data)
                answer = await reply(client)
                assert answer["type"] in ("error", "subscribed"), (data, answer)
            await assert_still_live(running, client, "T-000001")


@pytest.mark.parametrize("x", ["x", b"x"], ids=["text", "binary"])
async def test_message_over_the_limit_closes_with_1009_and_at_the_limit_does_not(running, x):
    with trio.fail_after(20):
        async with open_live(running.http_port) as client:
            await client.send(x * MAX_MESSAGE)
            assert (await reply(client))["error"]["code"] == "invalid_json"
            await client.send(x * (MAX_MESSAGE + 1))
            with pytest.raises(ConnectionClosed) as closed:
                await client.receive()
        assert closed.value.reason.code == 1009
        async with open_live(running.http_port) as other:
            await assert_still_live(running, other, "T-000001")


async def test_subscription_over_the_serial_limit_is_an_error_and_changes_nothing(running):
    serials = [f"T-{n:06d}" for n in range(1, MAX_SERIALS + 2)]
    with trio.fail_after(20):
        async with open_live(running.http_port) as client:
            await client.subscribe(serials[:MAX_SERIALS])
            await client.send({"type": "subscribe", "serials": serials})
            error = (await reply(client))["error"]
            now = datetime.now(UTC)
            running.hub.publish([SensorState(1, serials[0], None, "online", now, now)])
            sensor = await client.next("sensor")
    assert error["code"] == "invalid_subscribe"
    assert f"at most {MAX_SERIALS}" in error["message"]
    assert sensor["sensors"][0]["serial"] == serials[0]  # the earlier subscription holds


async def test_a_flood_of_subscriptions_is_answered_in_order_and_wedges_nothing(running, api):
    async def flood(client: LiveClient) -> None:
        for n in range(FLOOD):
            await client.send({"type": "subscribe", "serials": [f"T-{n % 999_999 + 1:06d}"]})

    with trio.fail_after(120):
        async with (
            open_live(running.http_port) as flooding,
            open_live(running.http_port) as bystander,
        ):
            await bystander.subscribe(["T-999999"])
            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood, flooding)
                for _ in range(FLOOD):
                    assert (await reply(flooding))["type"] == "subscribed"
            await assert_still_live(running, bystander, "T-999999")
            await assert_still_live(running, flooding, "T-000001")
        assert (await api.get("/healthz")).status_code == 200
