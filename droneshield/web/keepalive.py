"""hypercorn's keep-alive timer, moved instead of restarted.

hypercorn's trio worker times an idle connection out with a task (`TrioSingleTask`): started
each time the connection goes idle, cancelled each time a request arrives. That is a task start
and a `Cancelled` raised and caught for every request: ~0.1 ms of the daemon's CPU per request
(measured on a fixed 11 KB answer: 0.80 ms of CPU with hypercorn's timer, 0.70 with this one;
a bare Quart-Trio route, whose timer quart-trio's disconnect cancels before it is armed, 0.64).
Here each connection has one watcher for its whole life, waiting under a cancel scope whose
deadline moves: `keep_alive_timeout` after the connection went idle, never while a request is in
progress.

What hypercorn's timer does is kept: an idle connection is closed after the timeout; when the
server stops (`terminated`), an idle connection is closed at once and a busy one once its
answer is out. And one thing it did not: an idle connection its client closed ends at once;
hypercorn's timer kept it, and its address's slot in `admission`, until the timeout ran out.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import trio
from hypercorn.config import Config
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import TrioSingleTask, WorkerContext
from hypercorn.typing import AppWrapper, LifespanState, TaskGroup


class KeepAliveTimer(TrioSingleTask):
    """What `TCPServer` calls its `idle_task`: `restart` when the connection goes idle, `stop`
    when a request begins. The first `restart` starts the watcher (`watch`)."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout
        self._scope = trio.CancelScope()  # the watcher's wait
        self._watching = False
        self._busy = False
        self._idle: trio.Event | None = None  # set when the connection goes idle, if awaited
        self._ended = False

    async def restart(self, task_group: TaskGroup, action: Callable[[], Awaitable[None]]) -> None:
        self._busy = False
        self._scope.deadline = trio.current_time() + self._timeout
        if self._idle is not None:
            self._idle.set()
            self._idle = None
        if not self._watching:
            self._watching = True
            task_group.spawn(action)

    async def stop(self) -> None:
        self._busy = True
        self._scope.deadline = math.inf

    def end(self) -> None:
        """The connection is over (nothing more will be read): the watcher leaves."""
        self._ended = True
        self._scope.cancel()

    async def watch(
        self, terminated: Callable[[], Awaitable[None]], close: Callable[[], Awaitable[None]]
    ) -> None:
        """Wait until the connection has been idle for the timeout, or the server stops and
        the connection is (or becomes) idle; then `close` it."""
        with self._scope:
            await terminated()
            while self._busy:  # the server stops during a request: close once it is answered
                self._idle = trio.Event()
                await self._idle.wait()
        if self._ended:
            return
        with trio.CancelScope(shield=True):
            await close()


class KeepAliveTCPServer(TCPServer):
    """hypercorn's connection handler with `KeepAliveTimer` for its keep-alive timer."""

    def __init__(
        self,
        app: AppWrapper,
        config: Config,
        context: WorkerContext,
        state: LifespanState,
        stream: trio.SSLStream[trio.SocketStream],
    ) -> None:
        super().__init__(app, config, context, state, stream)
        self.idle_task: KeepAliveTimer = KeepAliveTimer(config.keep_alive_timeout)

    async def _idle_timeout(self) -> None:
        await self.idle_task.watch(self.context.terminated.wait, self._initiate_server_close)

    async def _read_data(self) -> None:
        try:
            await super()._read_data()
        finally:
            self.idle_task.end()
