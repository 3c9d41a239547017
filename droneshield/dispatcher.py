"""The webhook dispatcher: sends what the outbox holds, batched per endpoint, signed, retried.

Each daemon runs one. It leases webhooks that have events due (db/webhooks.py: `FOR UPDATE
SKIP LOCKED`, a lease renewed before every POST), so several daemons share the endpoints and an
endpoint gets its events from one daemon at a time, in id order of those committed (db.pending
says what that guarantees), up to BATCH_MAX per POST (fewer with long ids: webhooks.fitting).
A failed POST leaves its events pending and backs the endpoint off (webhooks.retry_delay);
events older than `webhook_retry_for` are then `failed`. Delivery is at least once: a daemon
killed after a POST and before recording it has its lease expire, and the next holder sends the
same events again, with the same ids.

It looks for due events when a change may have queued some (a transition or a version change,
this daemon's or relayed from a peer, through the hub's tap; an upload, a test event, a fleet
alert: `ring`), when the soonest retry or a dead daemon's lease comes due, when one of its
endpoints is done, and every `webhook_poll` seconds for the rest (doorbell.py). An idle daemon
looks once per poll, where a poll every 0.2 s was ten round trips a second, webhooks or none.
Not PostgreSQL's NOTIFY from the outbox: a transaction that NOTIFYs takes a cluster-wide lock
at commit, which serialised the writer's commits that queued events (4 connections committing
small inserts: 5,600 → 3,500 a second).

A slow or dead endpoint holds only its own task (and at most one POST's events in memory); the
outbox in PostgreSQL is the buffer, so ingest and expiry never wait for delivery. Nothing an
endpoint does (its name, its DNS, its answers) ends the dispatcher: an unexpected error is that
POST's failure.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, partial
from typing import TYPE_CHECKING, Final, NoReturn

import trio

from . import metrics, webhooks
from .config import Settings
from .db import webhooks as db
from .db.pool import Connection, Pool, acquire, is_transient
from .domain import SensorState
from .doorbell import Doorbell
from .errors import DatabaseUnavailable
from .hub import Hub
from .periodic import every
from .targets import AllowList, IpAddress, Target, TargetRefused, TargetUnresolved, parse, resolve

if TYPE_CHECKING:
    import ssl

    import httpx

log = logging.getLogger(__name__)

LOOK_SPACING: Final = 0.2  # seconds: looks for due events are at least this far apart
ENDPOINTS_MAX: Final = 16  # endpoints one daemon sends to at once
IDLE_CLIENTS_MAX: Final = 64  # hosts whose connection is kept alive between POSTs
STATS_INTERVAL: Final = 5.0  # seconds between reads of the outbox gauges
FLEET_INTERVAL: Final = 10.0  # seconds between checks of the fleet's online share
PRUNE_INTERVAL: Final = 60.0  # seconds between pruning runs
PRUNE_BATCH: Final = 5000  # rows per pruning statement (short locks, small WAL bursts)
FAILURE_PAUSE: Final = 1.0  # seconds after a database error before looking again
ERROR_TEXT_MAX: Final = 300  # characters of an endpoint's answer kept as the last error
RESPONSE_READ_MAX: Final = 4096  # bytes of an endpoint's answer read (the rest is dropped)


@dataclass(frozen=True)
class Outcome:
    """How one POST went: `status` None when no answer came."""

    ok: bool
    status: int | None
    error: str | None = None
    retry_after: float | None = None


class Dispatcher:
    def __init__(self, pool: Pool, settings: Settings, hub: Hub) -> None:
        self._pool = pool
        self._hub = hub
        self._doorbell = Doorbell(spacing=LOOK_SPACING, poll=settings.webhook_poll)
        self._allow: AllowList = settings.webhook_targets
        self._timeout = settings.webhook_timeout
        self._retry_for = settings.webhook_retry_for
        self._retention = settings.webhook_retention
        # A lease outlives the longest POST, so it cannot lapse while its holder is sending.
        self._lease = 2 * settings.webhook_timeout + 5.0
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._slots = trio.Semaphore(ENDPOINTS_MAX)
        self._clients = HostClients(IDLE_CLIENTS_MAX)

    async def serve(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Dispatch until cancelled.

        Transient database errors are logged and retried; other errors propagate.

        Cancellation: a POST in flight is abandoned; its events stay pending and the lease
        lapses, so they are sent again (at least once).
        """
        async with AsyncExitStack() as stack, trio.open_nursery() as nursery:
            stack.push_async_callback(self._clients.aclose)  # after the nursery: none in use
            stack.enter_context(self._hub.tap(self._changed))
            nursery.start_soon(
                partial(every, self.read_stats, 0, STATS_INTERVAL, transient=transient)
            )
            nursery.start_soon(
                partial(every, self.check_fleet, 0, FLEET_INTERVAL, transient=transient)
            )
            nursery.start_soon(partial(every, self.prune, 0, PRUNE_INTERVAL, transient=transient))
            task_status.started()
            while True:
                try:
                    look = await self._look()
                except Exception as exc:
                    if not transient(exc):
                        raise
                    log.warning("webhook claim failed (%r)", exc)
                    await trio.sleep(FAILURE_PAUSE)
                    continue
                if look.claim is None:
                    await self._doorbell.wait(look.due_in)
                    continue
                nursery.start_soon(self._serve_endpoint, look.claim)
        raise AssertionError("unreachable")  # pragma: no cover

    def ring(self) -> None:
        """Events may have been queued (a commit: an upload, a test event, a fleet alert, a
        change the hub carries): look for due ones now."""
        self._doorbell.ring()

    def _changed(self, change: SensorState) -> None:
        """The hub's tap: a change whose statement may have queued events (a transition or a
        version change, made by a report or an expiry; a version never uploaded, reported)
        rings, whether this daemon made it or a peer's relayed it (that peer's dispatcher may
        have its endpoints busy: this one takes webhooks it cannot)."""
        if change.before is not None or change.reported_version is not None:
            self._doorbell.ring()

    async def _look(self) -> db.Look:
        """Claim a webhook with events due, holding an endpoint slot for it."""
        await self._slots.acquire()
        try:
            async with acquire(self._pool) as conn:
                look = await db.claim(conn, self.owner, self._lease)
        except BaseException:
            self._slots.release()
            raise
        if look.claim is None:
            self._slots.release()
        return look

    async def _serve_endpoint(self, claim: db.Claim) -> None:
        """Send the webhook's due events, a batch per POST, until none is left or a POST
        fails; then give the lease back.

        Each round takes one connection once: it records what the previous POST delivered,
        renews the lease and reads the next batch (`_advance`). A connection is never held
        during a POST, and on a busy pool (the writer's lanes hold theirs) one wait per POST
        instead of four is what keeps delivery ahead of a wave of events.
        """
        after = 0  # the last id sent: the next read starts past it
        sent: list[int] = []  # delivered by the last POST, not recorded yet
        try:
            while True:
                async with acquire(self._pool) as conn:
                    events = await self._advance(conn, claim, sent, after)
                if not events:
                    return
                if len(events) < webhooks.BATCH_MAX and events[0].age < webhooks.BATCH_WINDOW:
                    # Let the events of the same moment (an expiry of many sensors) share this
                    # POST.
                    await trio.sleep(webhooks.BATCH_WINDOW - events[0].age)
                    async with acquire(self._pool) as conn:
                        events = await self._advance(conn, claim, [], after)
                    if not events:
                        return
                ids = [e.id for e in events]
                ids = ids[: webhooks.fitting(ids)]  # the rest waits for the next POST
                events = events[: len(ids)]
                outcome = await self._post(claim, events)
                if not outcome.ok:
                    await self._failed(claim, ids, outcome)
                    return
                sent, after = ids, ids[-1]
        except Exception as exc:
            if not transient(exc):
                raise
            log.warning("webhook %d: database error (%r); retried later", claim.id, exc)
        finally:
            self._slots.release()
            with trio.CancelScope(shield=True), trio.move_on_after(self._timeout):
                try:
                    async with acquire(self._pool) as conn:
                        # Stopped after a POST: what it delivered is not sent again.
                        await self._record(conn, claim, sent)
                        await db.release(conn, claim.id, self.owner)
                except Exception as exc:  # the lease lapses on its own; the events are resent
                    log.warning("webhook %d: lease not released (%r)", claim.id, exc)
            # The look that found this webhook leased waits for its lease to end: look again
            # now (it may still hold events, due at once or at its retry time).
            self._doorbell.ring()

    async def _advance(
        self, conn: Connection, claim: db.Claim, sent: list[int], after: int
    ) -> list[db.Event]:
        """Record `sent` as delivered (emptying it), renew the lease, and read the next batch
        past `after`; no events when none is left or the lease was lost (another daemon sends
        now)."""
        await self._record(conn, claim, sent)
        if not await db.renew(conn, claim.id, self.owner, self._lease):
            log.warning("webhook %d: lease lost; another daemon sends now", claim.id)
            return []
        return await db.pending(conn, claim.id, after, webhooks.BATCH_MAX)

    @staticmethod
    async def _record(conn: Connection, claim: db.Claim, sent: list[int]) -> None:
        """Mark `sent` delivered and empty it (so an error later in the round does not count
        it twice)."""
        if sent:
            await db.delivered(conn, claim.id, sent)
            metrics.WEBHOOK_DELIVERIES.labels("delivered").inc(len(sent))
            sent.clear()

    async def _failed(self, claim: db.Claim, ids: list[int], outcome: Outcome) -> None:
        """Record a failed POST: its events are retried after a backoff, or given up."""
        async with acquire(self._pool) as conn:
            final = not webhooks.retryable(outcome.status)
            failures = await self._failures(conn, claim.id)
            delay = webhooks.retry_delay(failures + 1, webhooks.jitter(), outcome.retry_after)
            failed = await db.attempt_failed(
                conn,
                claim.id,
                ids,
                error=outcome.error or f"HTTP {outcome.status}",
                retry_in=delay,
                final=final,
                retry_for=self._retry_for,
            )
        metrics.WEBHOOK_DELIVERIES.labels("failed").inc(failed)
        metrics.WEBHOOK_DELIVERIES.labels("retried").inc(len(ids) - failed)
        log.warning(
            "webhook %d: POST of %d events failed (%s); %d given up, retry in %.1f s",
            claim.id,
            len(ids),
            outcome.error or f"HTTP {outcome.status}",
            failed,
            delay,
        )

    async def _failures(self, conn: Connection, webhook_id: int) -> int:
        found = await db.get(conn, webhook_id)
        return 0 if found is None else found.failures

    async def _post(self, claim: db.Claim, events: list[db.Event]) -> Outcome:
        """POST `events`; whatever goes wrong is the outcome, never an exception (but a
        cancellation), so no endpoint can end the dispatcher and with it the daemon."""
        try:
            return await self._send(claim, events)
        except Exception as exc:
            log.exception("webhook %d: unexpected error while sending", claim.id)
            return Outcome(False, None, f"unexpected {type(exc).__name__}: {exc}"[:ERROR_TEXT_MAX])

    async def _send(self, claim: db.Claim, events: list[db.Event]) -> Outcome:
        import httpx  # imported by the first delivery (`_http_client`)

        payload = webhooks.body([(e.id, e.type, e.occurred_at, e.body) for e in events])
        headers = webhooks.headers(claim.secret, time.time(), [e.id for e in events], payload)
        # One deadline for the name's resolution and the POST: both within the lease.
        with trio.move_on_after(self._timeout):
            try:
                target = parse(claim.url)  # refused if stored before `parse` had its rules
                address = (await resolve(target, self._allow))[0]
            except TargetUnresolved as exc:
                return Outcome(False, None, exc.message)  # a network error: retried
            except TargetRefused as exc:
                return Outcome(False, 403, exc.message)  # final: refused targets are not retried
            async with self._clients.using(target.host) as client:
                request = pinned_request(client, target, address, payload, headers)
                try:
                    response = await client.send(request, stream=True)
                    try:
                        answer = await _read_some(response)
                    finally:
                        await response.aclose()
                except httpx.HTTPError as exc:
                    return Outcome(False, None, f"{type(exc).__name__}: {exc}"[:ERROR_TEXT_MAX])
            if response.is_success:
                return Outcome(True, response.status_code)
            retry_after = webhooks.parse_retry_after(
                response.headers.get("Retry-After"), datetime.now(UTC)
            )
            text = f"HTTP {response.status_code}: {answer.decode(errors='replace')}"
            return Outcome(False, response.status_code, text[:ERROR_TEXT_MAX], retry_after)
        return Outcome(False, None, f"no answer within {self._timeout:g} s")

    async def read_stats(self) -> None:
        async with acquire(self._pool) as conn:
            depth, oldest = await db.outbox_stats(conn)
        metrics.OUTBOX_DEPTH.set(depth)
        metrics.OUTBOX_OLDEST_AGE.set(oldest)

    async def check_fleet(self) -> None:
        """Fire `fleet.online_below` for the watches whose threshold the fleet (or, for a
        webhook filtered by site, that site) just crossed."""
        fired = False
        async with acquire(self._pool) as conn, conn.transaction():
            watches = await db.lock_fleet_watches(conn)
            if not watches:
                return
            by_site = await db.online_by_site(conn)
            for w in watches:
                online, total = webhooks.online_share(by_site, w.site)
                below, fires = webhooks.fleet_alert(w.below, online, total, w.online_below)
                if below != w.below:
                    fire = db.FleetShare(online, total, w.online_below, w.site) if fires else None
                    await db.set_below(conn, w.id, below, fire)
                    fired |= fire is not None
        if fired:
            self.ring()

    async def prune(self) -> None:
        while True:
            async with acquire(self._pool) as conn:
                pruned = await db.prune(conn, self._retention, PRUNE_BATCH)
            if pruned < PRUNE_BATCH:
                return
            await trio.lowlevel.checkpoint()


def pinned_request(
    client: httpx.AsyncClient,
    target: Target,
    address: IpAddress,
    payload: bytes,
    headers: dict[str, str],
) -> httpx.Request:
    """A POST to the address just checked (not to whatever the name resolves to when httpx
    connects), with the URL's host as Host and TLS server name. `client` must be the host's
    (`HostClients`): a connection it opened was verified for this host only."""
    import httpx

    return client.build_request(
        "POST",
        httpx.URL(target.url).copy_with(host=str(address)),
        content=payload,
        headers={**headers, "Host": target.authority},
        extensions={"sni_hostname": target.host},
    )


class HostClients:
    """HTTP clients by host name, each lent to one POST at a time.

    A request goes to the pinned address, and a client pools its connections by address, so a
    client shared by two hosts at one address would send host B's POST over a connection opened,
    and whose TLS certificate was checked, for host A. A client of each host keeps every
    connection to the host it was verified for. Returned clients keep their connection alive
    for their host's next POST, up to `idle_max` of them; beyond, the least recently used is
    closed. Two POSTs to one host at once get a client each; the one returned later is kept.
    """

    def __init__(self, idle_max: int) -> None:
        self._idle_max = idle_max
        self._idle: OrderedDict[str, httpx.AsyncClient] = OrderedDict()

    @asynccontextmanager
    async def using(self, host: str) -> AsyncIterator[httpx.AsyncClient]:
        client = self._idle.pop(host, None) or _http_client()
        try:
            yield client
        finally:
            replaced = self._idle.pop(host, None)
            self._idle[host] = client
            closing = [] if replaced is None else [replaced]
            while len(self._idle) > self._idle_max:
                closing.append(self._idle.popitem(last=False)[1])
            with trio.CancelScope(shield=True):  # closing sockets: prompt, cancelled or not
                for old in closing:
                    await old.aclose()

    async def aclose(self) -> None:
        while self._idle:
            await self._idle.popitem()[1].aclose()


def _http_client() -> httpx.AsyncClient:
    """A client webhooks go out with, made when there is a first one to send: httpx (and
    the rich and click it imports for its own CLI) adds ~0.3 s of CPU to a start that no
    daemon without webhooks needs to pay, before it answers `/readyz`. One keep-alive
    connection: a client sends one POST at a time. No timeout of httpx's: one deadline
    (`Dispatcher._send`) bounds the name's resolution and the POST together."""
    import httpx

    return httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        verify=_tls(),
        timeout=None,
        limits=httpx.Limits(max_keepalive_connections=1),
    )


@cache
def _tls() -> ssl.SSLContext:
    """The TLS settings every client shares: loading the CA bundle costs ~20 ms of CPU, too
    much to pay for each host."""
    import httpx

    return httpx.create_ssl_context(trust_env=False)


def transient(exc: BaseException) -> bool:
    """A database error after which the same work may succeed later."""
    return isinstance(exc, DatabaseUnavailable) or is_transient(exc)


async def _read_some(response: httpx.Response) -> bytes:
    """The start of an answer: enough for an error message, bounded whatever is sent."""
    kept = b""
    async for chunk in response.aiter_raw():
        kept += chunk[: RESPONSE_READ_MAX - len(kept)]
        if len(kept) >= RESPONSE_READ_MAX:
            break
    return kept
