"""The dispatcher looks for due events when there is reason to, not on a short poll: each test
runs one whose poll is an hour, so whatever is delivered was found because this daemon's change
rang (the hub's tap), a retry time or a dead daemon's lease came due, or one of its own
endpoints was done. (test_webhooks.py runs the daemon with that poll too: there a report, an
expiry, an upload and a test event each ring.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest
import trio

from droneshield.config import Settings
from droneshield.db import webhooks as db_webhooks
from droneshield.db.pool import Connection, open_pool
from droneshield.dispatcher import Dispatcher
from droneshield.domain import SensorState
from droneshield.hub import Hub

from .support.receivers import Receiver

SECRET = "s3cret-s3cret-s3cret"
HOUR = 3600.0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # A lease (twice the timeout + 5 s) outlasts each test's deadline: no look waiting for one
    # to end delivers anything here.
    return settings.replace(
        webhook_allow_hosts="127.0.0.1", webhook_timeout=10.0, webhook_poll=HOUR
    )


@asynccontextmanager
async def dispatching(database_url: str, settings: Settings, hub: Hub) -> AsyncIterator[None]:
    async with open_pool(database_url, size=2) as pool, trio.open_nursery() as nursery:
        await nursery.start(Dispatcher(pool, settings, hub).serve)
        yield
        nursery.cancel_scope.cancel()


async def _webhook(db: Connection, receiver: Receiver) -> int:
    hook = await db_webhooks.create(
        db,
        url=receiver.url,
        events=["release.uploaded"],
        secret=SECRET,
        site=None,
        serials=None,
        online_below=None,
    )
    return hook.id


@pytest.fixture
async def receiver(nursery: trio.Nursery) -> Receiver:
    return await nursery.start(Receiver().serve)


@pytest.fixture
async def hook(db: Connection, receiver: Receiver) -> int:
    return await _webhook(db, receiver)


def _went_offline() -> SensorState:
    """A transition this daemon made (an expiry): its statement may have queued events."""
    now = datetime.now(UTC)
    return SensorState(1, "DS-1", None, "offline", now, now, before=("online", None))


async def test_a_change_this_daemon_publishes_rings_and_its_events_are_sent(
    database_url, db, settings, receiver, hook
):
    hub = Hub()
    with trio.fail_after(20):
        async with dispatching(database_url, settings, hub):
            # Its first look (found nothing) is done well within this; nothing else would make
            # it look for an hour. (Were it not done, the test would pass without the ring: a
            # sleep to order the commit after it, never one a pass depends on.)
            await trio.sleep(1)
            async with db.transaction():  # as the expiry's statement writes its events
                first = await db_webhooks.enqueue_test(db, hook)
                second = await db_webhooks.enqueue_test(db, hook)
            hub.publish([_went_offline()])
            await receiver.wait_until(lambda r: len(r.event_ids()) == 2)
    assert receiver.event_ids() == [str(first), str(second)]


async def test_a_failed_post_is_retried_when_its_backoff_ends(database_url, db, settings, nursery):
    answers = iter([500])
    receiver = await nursery.start(Receiver(answer=lambda _: next(answers, 200)).serve)
    hook = await _webhook(db, receiver)
    await db_webhooks.enqueue_test(db, hook)
    with trio.fail_after(20):
        async with dispatching(database_url, settings, Hub()):
            await receiver.wait_until(lambda r: len(r.accepted) == 1)
    assert len(receiver.posts) == 2


async def test_a_dead_daemons_lease_is_taken_over_when_it_ends(
    database_url, db, settings, receiver, hook
):
    await db_webhooks.enqueue_test(db, hook)
    # Leased by a daemon that died while sending: nobody renews it, and no commit says so.
    await db.execute(
        "UPDATE webhook SET lease_owner = 'dead', lease_until = now() + interval '2 s'"
        " WHERE id = $1",
        hook,
    )
    with trio.fail_after(20):
        async with dispatching(database_url, settings, Hub()):
            await receiver.wait_until(lambda r: len(r.accepted) == 1)
    assert await db.fetchval("SELECT lease_owner FROM webhook WHERE id = $1", hook) is None
