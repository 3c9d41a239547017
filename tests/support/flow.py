"""A stream of reports for fault tests: concurrent callers send each serial once, over a real
gRPC channel, and record what every call got back, so a test can compare what was acknowledged
with what the database holds after the fault."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

import trio
from grpclib import GRPCError

from droneshield.ingest.proto.status import DeviceStatus

from .grpc_clients import aio, grpclib_stub

CALL_TIMEOUT = 30.0  # seconds; longer than any ack_timeout the tests use, so the server answers


class Flow:
    """Reports of `version` for `serials`, each serial sent once. `acked` holds the serials
    whose report was acknowledged; `failures` counts the others by gRPC status name (or by
    exception type when the call got no status at all, e.g. a killed server)."""

    def __init__(self, port: int, serials: Iterable[str], version: str) -> None:
        self._port = port
        self._serials: Iterator[str] = iter(serials)
        self._version = version
        self.acked: set[str] = set()
        self.failures: Counter[str] = Counter()
        self.messages: dict[str, str] = {}  # one message per failure kind, for assertions
        self._changed = trio.Event()

    async def run(self, callers: int) -> None:
        """Send until the serials run out (or the caller cancels)."""
        async with grpclib_stub(self._port) as stub, trio.open_nursery() as nursery:
            for _ in range(callers):
                nursery.start_soon(self._caller, stub)

    async def _caller(self, stub) -> None:  # type: ignore[no-untyped-def]
        for serial in self._serials:
            message = DeviceStatus(serial=serial, software_version=self._version)
            try:
                await aio(stub.send_status, message, timeout=CALL_TIMEOUT)
            except GRPCError as exc:
                self._failed(exc.status.name, exc.message or "")
            # A killed server fails calls in several ways (StreamTerminatedError, OSError, …).
            except Exception as exc:
                self._failed(type(exc).__name__, str(exc))
            else:
                self.acked.add(serial)
            self._changed.set()
            self._changed = trio.Event()

    def _failed(self, kind: str, message: str) -> None:
        self.failures[kind] += 1
        self.messages.setdefault(kind, message)

    async def until(self, *, acked: int = 0, failures: int = 0, failed: str | None = None) -> None:
        """Wait until at least `acked` reports are acknowledged, `failures` calls failed and,
        with `failed`, a call failed with that status (the caller bounds the wait)."""
        while (
            len(self.acked) < acked
            or self.failures.total() < failures
            or (failed is not None and not self.failures[failed])
        ):
            await self._changed.wait()


async def stored(db, version: str) -> set[str]:  # type: ignore[no-untyped-def]
    """Serials whose sensor has been seen with `version` stored: where an acknowledged report of
    that version must have left its mark."""
    rows = await db.fetch(
        "SELECT serial FROM sensor WHERE last_seen_at IS NOT NULL AND version = $1", version
    )
    return {r["serial"] for r in rows}
