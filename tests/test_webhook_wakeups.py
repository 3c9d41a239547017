"""The dispatcher looks for due events when told, not on a poll: each test runs one with a poll
of an hour, so whatever is delivered was found through the outbox's NOTIFY (whoever wrote the
event), a retry time or a dead daemon's lease coming due."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from droneshield.config import Settings
from droneshield.db import webhooks as db_webhooks
from droneshield.db.pool import Connection, open_pool
from droneshield.dispatcher import Dispatcher

from .support.receivers import Receiver

SECRET = "s3cret-s3cret-s3cret"
HOUR = 3600.0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # A lease (twice the timeout + 5 s) outlasts each test's deadline: no look waiting for one
    # to end delivers anything here.
    return settings.replace(webhook_allow_hosts="127.0.0.1", webhook_timeout=10.0)


@asynccontextmanager
async def dispatching(database_url: str, settings: Settings) -> AsyncIterator[Dispatcher]:
    async with open_pool(database_url, size=2) as pool, trio.open_nursery() as nursery:
        dispatcher = Dispatcher(pool, database_url, settings, poll=HOUR)
        await nursery.start(dispatcher.serve)
        yield dispatcher
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


async def test_an_event_another_connection_commits_is_sent_at_once(
    database_url, db, settings, receiver, hook
):
    with trio.fail_after(20):
        async with dispatching(database_url, settings):
            # Its first look (found nothing) is done well within this; nothing else would make
            # it look for an hour. (Were it not done, the test would pass without a NOTIFY: a
            # sleep to order the commit after it, never one a pass depends on.)
            await trio.sleep(1)
            async with db.transaction():
                first = await db_webhooks.enqueue_test(db, hook)
                second = await db_webhooks.enqueue_test(db, hook)
            await receiver.wait_until(lambda r: len(r.event_ids()) == 2)
    assert receiver.event_ids() == [str(first), str(second)]


async def test_a_failed_post_is_retried_when_its_backoff_ends(database_url, db, settings, nursery):
    answers = iter([500])
    receiver = await nursery.start(Receiver(answer=lambda _: next(answers, 200)).serve)
    hook = await _webhook(db, receiver)
    await db_webhooks.enqueue_test(db, hook)
    with trio.fail_after(20):
        async with dispatching(database_url, settings):
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
        async with dispatching(database_url, settings):
            await receiver.wait_until(lambda r: len(r.accepted) == 1)
    assert await db.fetchval("SELECT lease_owner FROM webhook WHERE id = $1", hook) is None


async def test_an_event_queued_while_its_listen_connection_was_down_is_sent(
    database_url, db, settings, receiver, hook
):
    with trio.fail_after(20):
        async with dispatching(database_url, settings):
            await trio.sleep(1)  # for its first look, as above
            async with db.transaction():
                killed = await db.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE query LIKE 'LISTEN %droneshield_outbox%' "
                    "AND datname = current_database()"
                )
                # Committed while no LISTEN holds: its NOTIFY reaches nobody.
                await db_webhooks.enqueue_test(db, hook)
            await receiver.wait_until(lambda r: len(r.accepted) == 1)
    assert killed == 1
