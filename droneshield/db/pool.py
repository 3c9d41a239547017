"""The connection pool: the one place asyncpg's asyncio world is entered (through triopg)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Any, Final, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import trio
import trio_asyncio
import triopg

from ..errors import DatabaseUnavailable

log = logging.getLogger(__name__)

COMMAND_TIMEOUT: Final = 30.0  # seconds; a hung statement fails instead of stalling the writer
CLOSE_TIMEOUT: Final = 5.0  # seconds
CONNECT_TIMEOUT: Final = 5.0  # seconds

# SQLSTATE classes after which the same statement may succeed later: connection exceptions,
# insufficient resources, operator intervention (shutdown, restart; and a statement cancelled,
# 57014, by pg_cancel_backend or a role's statement_timeout: it ended the history and summary
# tasks, and with them the daemon), a lock not granted within a role's or database's
# lock_timeout (55P03: an operator's transaction holding a sensor's row failed its whole
# batch as an internal error), serialization/deadlock, and a foreign key violation
# (23503). The background statements retried on these (the writer's batch, expiry, the fleet
# check) only reference rows they read in the same statement: a release for a stored version,
# a webhook for an alert. A violation means one was removed after the read and before the
# check, which waited for the removal to commit; the retry reads without it (the version is
# then not stored, the alert not queued). Otherwise it failed a whole batch of reports as an
# internal error, or ended the daemon from expiry.
_OUTAGE_SQLSTATES: Final = ("08", "53", "57P")
_LOCK_NOT_AVAILABLE: Final = "55P03"
_TRANSIENT_SQLSTATES: Final = (
    *_OUTAGE_SQLSTATES,
    "57014",
    _LOCK_NOT_AVAILABLE,
    "40001",
    "40P01",
    "23503",
)


def _sqlstate_in(exc: BaseException, states: tuple[str, ...]) -> bool:
    state = getattr(exc, "sqlstate", None) or ""
    return isinstance(exc, asyncpg.PostgresError) and state.startswith(states)


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` says the database is away (unreachable, restarting, shutting down, out of
    connections) rather than that one statement failed: while it is, every statement fails,
    the writer's included."""
    # InternalClientError: a connection left mid-operation when the server killed it; the pool
    # replaces it, so the statement can be retried on another.
    if isinstance(
        exc, OSError | asyncpg.InterfaceError | asyncpg.InternalClientError | TimeoutError
    ):
        return True
    return _sqlstate_in(exc, _OUTAGE_SQLSTATES)


def is_transient(exc: BaseException) -> bool:
    """Whether retrying later may succeed, as opposed to a statement that is simply wrong."""
    return is_outage(exc) or _sqlstate_in(exc, _TRANSIENT_SQLSTATES)


def is_lock_timeout(exc: BaseException) -> bool:
    """Whether `exc` is a lock not granted within `lock_timeout` (55P03): another transaction
    holds a row the statement needed."""
    return _sqlstate_in(exc, (_LOCK_NOT_AVAILABLE,))


# SQLSTATE classes of the errors a row's data causes: a data exception, a constraint, a
# trigger's RAISE. Others (a missing table, a permission) fail a statement whatever its rows.
_ROW_ERROR_CLASSES: Final = ("22", "23", "P0")


def is_row_error(exc: BaseException) -> bool:
    """Whether `exc` (not transient) may be some rows' doing, so that a statement over fewer
    rows may succeed (the writer then commits a batch in halves)."""
    return _sqlstate_in(exc, _ROW_ERROR_CLASSES)


def _lost_connections_are_transient(
    loop: asyncio.AbstractEventLoop, context: dict[str, Any]
) -> None:
    """The loop's exception handler. trio-asyncio's default re-raises into the loop's nursery
    whatever asyncio reports (e.g. "Future exception was never retrieved"), so an asyncpg future
    nobody awaits any more would crash the daemon: asyncpg's SSL probe leaves one holding
    `ConnectionError('unexpected connection_lost() call')` when a connect is cancelled or times
    out while the server restarts. A transient error there is logged; its connection is gone and
    whoever wanted one has already been told. Anything else still crashes, as it should."""
    exc = context.get("exception")
    if exc is not None and is_transient(exc):
        log.warning("asyncio: %s (%r)", context.get("message", "unhandled error"), exc)
        return
    loop.default_exception_handler(context)


def shown(dsn: str) -> str:
    """`dsn` fit to print: its password (in the user part or a query parameter) masked."""
    url = urlsplit(dsn)
    netloc = url.netloc
    if url.password is not None:
        netloc = netloc.replace(f":{url.password}@", ":***@", 1)
    query = "&".join(
        "password=***" if part.startswith("password=") else part for part in url.query.split("&")
    )
    return urlunsplit(url._replace(netloc=netloc, query=query))


@contextmanager
def connecting(dsn: str | None = None) -> Iterator[None]:
    """Around getting a connection (pooled or not): any failure becomes DatabaseUnavailable,
    whatever the reason the server gave, so callers can tell "cannot reach it" from "the
    statement failed", and "database unavailable" means one thing everywhere. With `dsn`, the
    message names it (password masked) and says why in a person's words: unreachable, login
    refused, no such database.
    """
    where = f"the database at {shown(dsn)}" if dsn else "the database"
    try:
        yield
    except (
        asyncpg.InvalidPasswordError,
        asyncpg.InvalidAuthorizationSpecificationError,
    ) as exc:
        raise DatabaseUnavailable(f"{where} refused the login: {exc}") from exc
    except asyncpg.InvalidCatalogNameError as exc:
        raise DatabaseUnavailable(f"{where}: {exc}") from exc
    except (OSError, TimeoutError) as exc:
        reason = exc.strerror or str(exc) or "timed out"
        raise DatabaseUnavailable(f"cannot reach {where}: {reason}") from exc
    except Exception as exc:
        raise DatabaseUnavailable(f"cannot connect to {where}: {exc}") from exc


class Record(Protocol):
    """A result row (asyncpg.Record): a value by column name or position."""

    def __getitem__(self, key: str | int, /) -> Any: ...

    def keys(self) -> Iterable[str]: ...

    def items(self) -> Iterable[tuple[str, Any]]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Transaction(Protocol):
    async def __aenter__(self) -> object: ...

    async def __aexit__(self, *exc_info: object) -> bool | None: ...


class Connection(Protocol):
    """What droneshield uses of a connection (triopg's proxy of asyncpg's, untyped upstream;
    the signatures are asyncpg's)."""

    async def execute(self, query: str, *args: object) -> str: ...

    async def fetch(self, query: str, *args: object) -> list[Record]: ...

    async def fetchrow(self, query: str, *args: object) -> Record | None: ...

    async def fetchval(self, query: str, *args: object, column: int = 0) -> Any: ...

    def transaction(
        self, *, isolation: str | None = None, readonly: bool = False, deferrable: bool = False
    ) -> Transaction: ...

    async def copy_records_to_table(
        self,
        table_name: str,
        *,
        records: Iterable[Sequence[object]],
        columns: Sequence[str] | None = None,
    ) -> str: ...

    def is_closed(self) -> bool: ...

    def is_in_transaction(self) -> bool: ...


class Pool(Protocol):
    """What droneshield uses of a pool (triopg's proxy of asyncpg's, untyped upstream)."""

    def acquire(self) -> AbstractAsyncContextManager[Connection]: ...

    async def close(self) -> None: ...

    def terminate(self) -> None: ...


@asynccontextmanager
async def open_pool(
    dsn: str, *, size: int, session: Mapping[str, str] | None = None
) -> AsyncIterator[Pool]:
    """A pool of `size` connections. Must run inside `trio_asyncio.open_loop()`.

    With `session`, every connection starts with these settings, and connections are lent
    from trio (see `_Lending`) instead of asyncpg's pool: acquiring and releasing one then
    costs nothing, where asyncpg's cost ~0.7 ms of CPU (asyncio tasks stepped through
    trio-asyncio) plus a round trip to reset the session. Such a pool is only for code that
    leaves no session state behind: no `SET`, `LISTEN`, advisory or session locks, cursors or
    temporary tables.

    Cancellation: closing is shielded and bounded, so a cancelled daemon still closes its
    connections instead of leaving them to the server's timeout.
    """
    trio_asyncio.current_loop.get().set_exception_handler(_lost_connections_are_transient)
    pool = triopg.create_pool(
        dsn,
        min_size=1,
        max_size=size,
        command_timeout=COMMAND_TIMEOUT,
        timeout=CONNECT_TIMEOUT,
        server_settings=None if session is None else dict(session),
    )
    with connecting(dsn):
        await pool.__aenter__()
    opened: Pool = pool if session is None else _Lending(pool, size)
    try:
        yield opened
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT) as scope:
            await opened.close()
        if scope.cancelled_caught:
            log.warning("pool did not close in %.0f s; terminating connections", CLOSE_TIMEOUT)
            opened.terminate()


class _Lending:
    """Connections of an asyncpg pool, each taken from it once and then lent from trio.

    A connection goes back to asyncpg's pool only when a use ends in an exception (a
    cancelled or failed statement), leaves it in a transaction, or finds it closed (the
    server went away while it was idle): asyncpg then waits for a cancelled statement, rolls
    back, resets the session, or replaces the connection; and the use takes another. Closing
    gives every idle connection back first (asyncpg's `close` waits for all of them).
    """

    def __init__(self, pool: Pool, size: int) -> None:
        self._pool = pool
        self._slots = trio.Semaphore(size)
        self._idle: list[tuple[AbstractAsyncContextManager[Connection], Connection]] = []

    def acquire(self) -> AbstractAsyncContextManager[Connection]:
        return self._lend()

    @asynccontextmanager
    async def _lend(self) -> AsyncIterator[Connection]:
        async with self._slots:
            while self._idle:
                taken, conn = self._idle.pop()
                if not conn.is_closed():
                    break
                await taken.__aexit__(None, None, None)  # lost while idle (a server restart)
            else:
                taken = self._pool.acquire()
                conn = await taken.__aenter__()
            try:
                yield conn
            except BaseException:
                await taken.__aexit__(None, None, None)  # shielded by triopg
                raise
            if conn.is_closed() or conn.is_in_transaction():
                await taken.__aexit__(None, None, None)
            else:
                self._idle.append((taken, conn))

    async def close(self) -> None:
        while self._idle:
            taken, _ = self._idle.pop()
            await taken.__aexit__(None, None, None)
        await self._pool.close()

    def terminate(self) -> None:
        self._idle.clear()
        self._pool.terminate()


@asynccontextmanager
async def _entered(
    context: AbstractAsyncContextManager[Connection], dsn: str | None = None
) -> AsyncIterator[Connection]:
    """`context` entered with its failures made DatabaseUnavailable; left with what ended the
    use (a lending pool keeps no connection whose use failed)."""
    with connecting(dsn):
        conn = await context.__aenter__()
    try:
        yield conn
    except BaseException as exc:
        if not await context.__aexit__(type(exc), exc, exc.__traceback__):
            raise
    else:
        await context.__aexit__(None, None, None)


def acquire(pool: Pool) -> AbstractAsyncContextManager[Connection]:
    """A pooled connection: how every query of the daemon reaches the database.

    Raises (on entering): DatabaseUnavailable when no connection can be had.
    """
    return _entered(pool.acquire())


@asynccontextmanager
async def connect(dsn: str) -> AsyncIterator[Connection]:
    """One connection outside the pool (migrations, seeding, a daemon's index builds), closed
    within CLOSE_TIMEOUT (shielded), else aborted: triopg's close is shielded without a bound,
    so a daemon stopping while the server is unreachable would wait as long as TCP does.

    Raises (on entering): DatabaseUnavailable when no connection can be had.
    """
    proxy = triopg.connect(dsn, timeout=CONNECT_TIMEOUT)
    with connecting(dsn):
        conn = await proxy.__aenter__()
    try:
        yield conn
    finally:
        await close_bounded(conn._asyncpg_conn)  # triopg's proxy holds asyncpg's connection


async def close_bounded(raw: asyncpg.Connection) -> None:
    """Close an asyncpg connection within CLOSE_TIMEOUT, shielded; abort it if that fails."""
    with trio.CancelScope(shield=True):
        try:
            await trio_asyncio.aio_as_trio(raw.close)(timeout=CLOSE_TIMEOUT)
        except Exception:  # whatever went wrong, the connection goes (and hides no error)
            raw.terminate()


T = TypeVar("T")


async def on_connection(dsn: str, work: Callable[[Connection], Awaitable[T]]) -> T:
    """Run `work` on one connection outside the pool, in a trio-asyncio loop of its own: what
    a one-off command (migrate, seed) needs, outside the daemon's loop."""
    async with trio_asyncio.open_loop(), connect(dsn) as conn:
        return await work(conn)
