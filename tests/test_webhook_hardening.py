"""What endpoints, their names and their DNS cannot do to the dispatcher: stop the daemon (an odd
Retry-After, an internationalised name, a resolver gone wrong), fail events for good on a DNS
hiccup, outlast the timeout while resolving, ride another host's connection, or have a proxy
refuse a POST for its headers' size; and a fleet check that uncommitted events do not hold up.

The daemon runs in the test's trio run, so a trio hostname resolver of the test's (`Names`)
answers its DNS: any name can point at a local receiver, fail, or never answer.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from droneshield import webhooks
from droneshield.config import Settings
from droneshield.db import seed
from droneshield.db import webhooks as db_webhooks
from droneshield.db.pool import Connection, connect, open_pool
from droneshield.dispatcher import Dispatcher, HostClients, pinned_request
from droneshield.hub import Hub
from droneshield.targets import TargetRefused, parse

from .support.processes import eventually
from .support.receivers import Received, Receiver

SECRET = "s3cret-s3cret-s3cret"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(webhook_allow_hosts="127.0.0.1", webhook_timeout=1.0)


@dataclass
class Names(trio.abc.HostnameResolver):
    """The test's DNS: a name's address, an error to raise, or None (never answers); other
    names do not exist."""

    answers: dict[str, str | OSError | None] = field(default_factory=dict)

    async def getaddrinfo(
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[Any]:
        name = (host or b"").decode()
        if name not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answer = self.answers[name]
        if answer is None:
            await trio.sleep_forever()
        if isinstance(answer, OSError):
            raise answer
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (answer, port))]

    async def getnameinfo(self, sockaddr: tuple[Any, ...], flags: int) -> tuple[str, str]:
        raise NotImplementedError


@pytest.fixture
async def names() -> Names:
    resolver = Names()
    trio.socket.set_custom_hostname_resolver(resolver)  # for this test's trio run only
    return resolver


_HOSTS: ContextVar[set[str]] = ContextVar("hosts")  # the Host headers of this connection


@dataclass
class HostsPerConnection(Receiver):
    """A receiver noting the Host headers each TCP connection it accepted carried."""

    connections: list[set[str]] = field(default_factory=list)

    async def _handle(self, stream: trio.SocketStream) -> None:
        hosts: set[str] = set()
        self.connections.append(hosts)
        _HOSTS.set(hosts)
        await super()._handle(stream)


def _noting_host(received: Received) -> int:
    _HOSTS.get().add(received.headers["host"])
    return 200


async def _subscribe(api: httpx.AsyncClient, url: str) -> int:
    response = await api.post(
        "/webhooks", json={"url": url, "events": ["sensor.online"], "secret": SECRET}
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def _delivery(api: httpx.AsyncClient, hook: int) -> dict[str, Any]:
    [latest, *_] = (await api.get(f"/webhooks/{hook}/deliveries")).json()["items"]
    return dict(latest)


async def _test_event(api: httpx.AsyncClient, hook: int) -> None:
    assert (await api.post(f"/webhooks/{hook}/test")).status_code == 202


def _retried(api: httpx.AsyncClient, hook: int) -> Callable[[], Awaitable[bool]]:
    """Whether the latest event was tried and is still pending (to be retried)."""

    async def check() -> bool:
        latest = await _delivery(api, hook)
        return bool(latest["status"] == "pending" and latest["attempts"] >= 1)

    return check


def _delivered(api: httpx.AsyncClient, hook: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool((await _delivery(api, hook))["status"] == "delivered")

    return check


# Rules: Retry-After, URLs as the dispatcher reads them, the pinned request, the ids header.


@pytest.mark.parametrize(
    "value", ["²", "①", "١٢٠", "12²", "Mon, 01 Jan 2026 00:00:00 +99999999999999999999999"]
)
def test_retry_after_is_ascii_seconds_or_a_date_and_nothing_else(value):
    assert webhooks.parse_retry_after(value, NOW) is None


@given(st.text())
def test_no_retry_after_raises(value):
    webhooks.parse_retry_after(value, NOW)


@pytest.mark.parametrize(
    ("url", "stored", "host"),
    [
        ("https://Bücher.example/ä?q=ü", "https://xn--bcher-kva.example/%C3%A4?q=%C3%BC", None),
        ("http://[2001:DB8::1]:8080/x", "http://[2001:DB8::1]:8080/x", "2001:db8::1"),
        ("HTTP://H.example/x", "http://h.example/x", "h.example"),
    ],
)
def test_urls_are_stored_as_they_are_sent(url, stored, host):
    target = parse(url)
    assert target.url == stored
    assert target.host == (host or "xn--bcher-kva.example")
    assert parse(target.url) == target


@pytest.mark.parametrize(
    "url",
    [
        "http://h.example/a\x7f",
        "http://h.example/a\nb",
        "https://☃.example/",
        "http://h.example:0/",
        "http://h.example:65536/",
        "http:///x",
        "mailto:a@h.example",
    ],
)
def test_urls_httpx_would_not_send_are_refused(url):
    with pytest.raises(TargetRefused):
        parse(url)


@given(st.text())
def test_any_text_is_a_target_or_refused(url):
    try:
        target = parse(url)
    except TargetRefused:
        return
    assert target.url.isascii()
    assert target.host.isascii()


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://[2001:db8::1]:8080/x", "[2001:db8::1]:8080"),
        ("http://[2001:db8::1]/x", "[2001:db8::1]"),
        ("http://h.example/x", "h.example"),
        ("http://h.example:443/x", "h.example:443"),
        ("https://h.example:443/x", "h.example"),
        ("https://h.example:80/x", "h.example:80"),
        ("https://bücher.example:8443/x", "xn--bcher-kva.example:8443"),
    ],
)
async def test_the_pinned_request_names_the_urls_host(url, host):
    target = parse(url)
    address = ipaddress.ip_address("192.0.2.7")
    async with httpx.AsyncClient() as client:
        request = pinned_request(client, target, address, b"{}", {"X-A": "b"})
    assert request.headers["Host"] == host
    assert request.url.host == "192.0.2.7"
    assert request.url.path == "/x"
    assert request.extensions["sni_hostname"] == target.host


@given(st.lists(st.integers(1, 2**63 - 1), min_size=1, max_size=webhooks.BATCH_MAX))
def test_a_posts_ids_fit_a_small_header(ids):
    fitting = webhooks.fitting(ids)
    header = webhooks.headers(SECRET, 0, ids[:fitting], b"{}")["X-Droneshield-Event-Ids"]
    assert len(header) <= webhooks.IDS_HEADER_MAX
    assert fitting == len(ids) or len(f"{header},{ids[fitting]}") > webhooks.IDS_HEADER_MAX
    assert fitting >= min(len(ids), 300)


# The daemon against odd receivers, names and DNS.


async def test_an_odd_retry_after_is_ignored_and_the_daemon_goes_on(api, nursery):
    answers = iter([503])
    # "²".isdigit() is True; sent as UTF-8 (h11 takes bytes), which httpx decodes.
    r = Receiver(answer=lambda _: next(answers, 200), headers={"Retry-After": "²".encode()})
    with trio.fail_after(20):
        await nursery.start(r.serve)
        hook = await _subscribe(api, r.url)
        await _test_event(api, hook)
        await r.wait_until(lambda r: len(r.accepted) == 1)
        await eventually(_delivered(api, hook))
    assert len(r.posts) == 2


async def test_an_internationalised_name_is_stored_and_sent_in_idna_form(api, nursery, names):
    r = Receiver()
    with trio.fail_after(20):
        await nursery.start(r.serve)
        names.answers["xn--bcher-kva.example"] = "127.0.0.1"
        created = await api.post(
            "/webhooks",
            json={
                "url": f"http://bücher.example:{r.port}/hook",
                "events": ["sensor.online"],
                "secret": SECRET,
            },
        )
        assert created.status_code == 201, created.text
        assert created.json()["url"] == f"http://xn--bcher-kva.example:{r.port}/hook"
        await _test_event(api, created.json()["id"])
        await r.wait_until(lambda r: len(r.accepted) == 1)
    assert r.accepted[0].headers["host"] == f"xn--bcher-kva.example:{r.port}"


async def test_an_unexpected_error_is_a_failed_attempt_not_the_daemons_end(
    api, db, nursery, names, caplog
):
    r = Receiver()
    await nursery.start(r.serve)
    # A resolver gone wrong: an address that is not one (ipaddress raises ValueError).
    names.answers["odd.example"] = "not-an-address"
    hook = await db_webhooks.create(
        db,
        url=f"http://odd.example:{r.port}/hook",
        events=["sensor.online"],
        secret=SECRET,
        site=None,
        serials=None,
        online_below=None,
    )
    with trio.fail_after(20):
        await _test_event(api, hook.id)
        await eventually(_retried(api, hook.id))
        found = (await api.get(f"/webhooks/{hook.id}")).json()
        assert found["health"] == "retrying"
        assert found["lastError"].startswith("unexpected ValueError")
        names.answers["odd.example"] = "127.0.0.1"  # the resolver mended: delivered
        await eventually(_delivered(api, hook.id))
    assert f"webhook {hook.id}: unexpected error" in caplog.text


async def test_a_name_that_does_not_resolve_for_a_while_is_retried(api, nursery, names):
    r = Receiver()
    with trio.fail_after(20):
        await nursery.start(r.serve)
        names.answers["hooks.example"] = "127.0.0.1"
        hook = await _subscribe(api, f"http://hooks.example:{r.port}/hook")
        names.answers["hooks.example"] = socket.gaierror(
            socket.EAI_AGAIN, "Temporary failure in name resolution"
        )
        await _test_event(api, hook)
        await eventually(_retried(api, hook))
        assert "does not resolve" in (await _delivery(api, hook))["lastError"]
        names.answers["hooks.example"] = "127.0.0.1"
        await r.wait_until(lambda r: len(r.accepted) == 1)
        await eventually(_delivered(api, hook))


async def test_a_resolver_that_never_answers_is_bounded_by_the_timeout(api, nursery, names):
    r = Receiver()
    with trio.fail_after(20):
        await nursery.start(r.serve)
        names.answers["slow.example"] = "127.0.0.1"
        hook = await _subscribe(api, f"http://slow.example:{r.port}/hook")
        names.answers["slow.example"] = None
        await _test_event(api, hook)
        await eventually(_retried(api, hook))
    assert (await _delivery(api, hook))["lastError"] == "no answer within 1 s"
    assert r.posts == []


async def test_names_at_one_address_never_share_a_connection(api, nursery, names):
    r = HostsPerConnection(answer=_noting_host)
    with trio.fail_after(20):
        await nursery.start(r.serve)
        names.answers.update({"a.example": "127.0.0.1", "b.example": "127.0.0.1"})
        a = await _subscribe(api, f"http://a.example:{r.port}/hook")
        b = await _subscribe(api, f"http://b.example:{r.port}/hook")
        for n, hook in enumerate([a, b, a, b], start=1):  # one after another: kept alive
            await _test_event(api, hook)
            await r.wait_until(lambda r, n=n: len(r.accepted) == n)
    assert all(len(hosts) == 1 for hosts in r.connections if hosts)
    assert set().union(*r.connections) == {f"a.example:{r.port}", f"b.example:{r.port}"}


async def test_idle_clients_are_kept_per_host_and_bounded():
    clients = HostClients(idle_max=1)
    async with clients.using("a.example") as a:
        pass
    async with clients.using("a.example") as again:
        assert again is a  # its connection kept alive for the host's next POST
        async with clients.using("a.example") as meanwhile:
            assert meanwhile is not a  # lent to one POST at a time
    assert meanwhile.is_closed  # returned first: replaced by the one returned later
    assert not a.is_closed
    async with clients.using("b.example") as b:
        pass
    assert a.is_closed  # the least recently used beyond `idle_max`
    await clients.aclose()
    assert b.is_closed


async def test_large_event_ids_keep_the_header_small(api, db, nursery):
    r = Receiver()
    await nursery.start(r.serve)
    with trio.fail_after(30):
        hook = await _subscribe(api, r.url)
        await db.execute("SELECT setval(pg_get_serial_sequence('outbox', 'id'), 1000000000000)")
        await db.execute(
            "INSERT INTO outbox (webhook_id, type, occurred_at, body) "
            "SELECT $1, 'webhook.test', now(), '{\"test\": {}}' FROM generate_series(1, 1000)",
            hook,
        )
        await r.wait_until(lambda r: len(r.event_ids()) == 1000)
    sizes = [len(p.headers["x-droneshield-event-ids"]) for p in r.accepted]
    assert max(sizes) <= webhooks.IDS_HEADER_MAX < 8192 - 1024  # a line nginx takes, and more
    assert len(sizes) > 1
    ids = [int(i) for i in r.event_ids()]
    assert ids == sorted(set(ids))  # in order, each once


# The fleet check beside ingest.


async def test_an_uncommitted_event_does_not_hold_up_the_fleet_check(
    aio_loop, database_url, db: Connection, settings
):
    await seed.seed(db, 10)
    await db.execute(  # 2 of 10 online: under the threshold of half
        "UPDATE sensor SET online = id <= 2, last_seen_at = now(), status_changed_at = now()"
    )
    hook = await db_webhooks.create(
        db,
        url="http://127.0.0.1:9/x",
        events=["fleet.online_below", "sensor.online"],
        secret=SECRET,
        site=None,
        serials=None,
        online_below=0.5,
    )
    with trio.fail_after(10):
        async with connect(database_url) as ingest, open_pool(database_url, size=1) as pool:
            # Ingest writing an event for this webhook, not committed yet: its foreign key
            # holds FOR KEY SHARE on the webhook's row.
            async with ingest.transaction():
                await db_webhooks.enqueue_test(ingest, hook.id)
                await Dispatcher(pool, settings, Hub()).check_fleet()
                assert await db.fetchval("SELECT below FROM webhook WHERE id = $1", hook.id)
    fired = await db.fetchval(
        "SELECT count(*) FROM outbox WHERE webhook_id = $1 AND type = 'fleet.online_below'",
        hook.id,
    )
    assert fired == 1
