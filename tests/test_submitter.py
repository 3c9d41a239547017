"""The hand-over from grpclib's handlers to the writer's queue, on its own: a full queue slows
callers down, but never holds a report past its deadline."""

from __future__ import annotations

import trio
import trio_asyncio

from droneshield.errors import IngestUnavailable
from droneshield.ingest.bridge import Submitter
from droneshield.reports import TOO_LATE, Pending


async def test_a_report_waiting_for_queue_room_is_answered_at_its_deadline(aio_loop):
    send, receive = trio.open_memory_channel[Pending](0)  # nobody takes: the writer is stuck
    submitter = Submitter(send, ack_timeout=0.2)
    with trio.fail_after(10), receive:
        outcomes = await trio_asyncio.aio_as_trio(submitter.submit)([("DS-00000001", None, None)])
    assert len(outcomes) == 1
    assert isinstance(outcomes[0], IngestUnavailable)
    assert str(outcomes[0]) == TOO_LATE
