"""The webhook rules as plain functions: signatures, the retry schedule, Retry-After, the fleet
alert's hysteresis, the target allow list; and the dispatcher's backoff on a MockClock."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import itertools
from datetime import UTC, datetime, timedelta

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from droneshield import webhooks
from droneshield.targets import AllowList, TargetRefused, parse, resolve

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_signature_is_hmac_of_timestamp_dot_body():
    payload = webhooks.body([(7, "sensor.offline", NOW, {"sensor": {"serial": "A"}})])
    headers = webhooks.headers("k", 1700000000.9, [7], payload)
    expected = hmac.new(b"k", b"1700000000." + payload, hashlib.sha256).hexdigest()
    assert headers["X-Droneshield-Signature"] == f"sha256={expected}"
    assert headers["X-Droneshield-Timestamp"] == "1700000000"
    assert headers["X-Droneshield-Event-Ids"] == "7"
    assert payload.startswith(b'{"events":[{"id":"7","type":"sensor.offline","occurredAt":"2026')


@given(st.integers(1, 100), st.floats(0, 1, exclude_max=True))
def test_backoff_doubles_with_jitter_in_the_upper_half_and_is_capped(failures, draw):
    delay = webhooks.retry_delay(failures, draw)
    step = min(webhooks.RETRY_CAP, webhooks.RETRY_BASE * 2 ** (failures - 1))
    assert step / 2 <= delay <= step


def test_retry_after_is_honoured_when_longer_and_capped():
    assert webhooks.retry_delay(1, 0.0, retry_after=30) == 30
    assert webhooks.retry_delay(12, 0.0, retry_after=1) == webhooks.retry_delay(12, 0.0)
    assert webhooks.retry_delay(1, 0.0, retry_after=10**9) == webhooks.RETRY_AFTER_CAP


def test_retry_after_parses_seconds_and_dates():
    assert webhooks.parse_retry_after("120", NOW) == 120
    later = (NOW + timedelta(seconds=90)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert webhooks.parse_retry_after(later, NOW) == 90
    assert webhooks.parse_retry_after("yesterday", NOW) is None
    assert webhooks.parse_retry_after(None, NOW) is None


@pytest.mark.parametrize(
    ("status", "retried"),
    [
        (None, True),
        (500, True),
        (503, True),
        (429, True),
        (408, True),
        (400, False),
        (410, False),
        (301, False),
    ],
)
def test_what_is_retried(status, retried):
    assert webhooks.retryable(status) is retried


def test_fleet_alert_fires_once_and_rearms_above_the_hysteresis():
    below, fired = False, []
    for online in (95, 89, 85, 90, 92, 89, 96, 80):  # of 100, threshold 0.9
        below, fires = webhooks.fleet_alert(below, online, 100, 0.9)
        fired.append(fires)
    assert fired == [False, True, False, False, False, False, False, True]
    assert webhooks.fleet_alert(False, 0, 0, 0.9) == (False, False)
    # A threshold of the whole fleet re-arms at the whole fleet.
    assert webhooks.fleet_alert(True, 100, 100, 1.0) == (False, False)


async def test_retry_schedule_on_a_mock_clock(autojump_clock):
    """Attempts spaced by retry_delay: on a MockClock, an endpoint failing eight times is tried
    at the schedule's times exactly (eight failures span 191 s of mock time, no real wait)."""
    attempts: list[float] = []

    async def deliver_with_retries() -> None:
        failures = 0
        while True:
            attempts.append(trio.current_time())
            if failures == 8:
                return
            failures += 1
            await trio.sleep(webhooks.retry_delay(failures, 0.5))

    with trio.fail_after(300):
        await deliver_with_retries()
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(attempts)]
    assert gaps == [0.75, 1.5, 3.0, 6.0, 12.0, 24.0, 48.0, 96.0]


def test_allow_list_parses_hosts_and_networks():
    allow = AllowList.parse(" 127.0.0.1, hooks.internal ,10.0.0.0/8,[::1]")
    assert allow.hosts == {"hooks.internal", "::1"} or allow.allows(ipaddress.ip_address("::1"))
    assert allow.allows(ipaddress.ip_address("10.2.3.4"))
    assert allow.allows(ipaddress.ip_address("127.0.0.1"))
    assert not allow.allows(ipaddress.ip_address("192.168.1.1"))
    assert allow.allows(ipaddress.ip_address("1.1.1.1"))
    with pytest.raises(ValueError, match="not a network"):
        AllowList.parse("10.0.0.0/99")
    # As targets name hosts (URLs are stored in IDNA form): a Unicode entry still matches.
    assert AllowList.parse("Bücher.internal").hosts == {parse("http://bücher.internal/").host}


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("64:ff9b::808:808", True),  # NAT64 to 8.8.8.8
        ("64:ff9b::a00:1", False),  # NAT64 to 10.0.0.1
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 to 169.254.169.254
        ("64:ff9b:1::808:808", False),  # a site's own NAT64 prefix
        ("2002:808:808::1", True),  # 6to4 of 8.8.8.8
        ("2002:a00:1::1", False),  # 6to4 of 10.0.0.1
        ("2606:4700::1111", True),
    ],
)
def test_ipv6_addresses_carrying_an_ipv4_one_are_judged_by_it(address, allowed):
    assert AllowList().allows(ipaddress.ip_address(address)) is allowed


async def test_names_are_checked_after_resolution():
    with trio.fail_after(10):
        with pytest.raises(TargetRefused, match="internal address"):
            await resolve(parse("http://localhost:8080/x"), AllowList())
        assert await resolve(parse("http://localhost:8080/x"), AllowList.parse("localhost"))
        assert await resolve(parse("http://127.0.0.1/x"), AllowList.parse("127.0.0.0/8"))
