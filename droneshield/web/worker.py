"""hypercorn's trio worker (`hypercorn.trio.serve`), composed here from hypercorn's own parts so
that its listeners can be wrapped (`listeners.AdmittingListener`) and each connection's stream
too (`expect.gated`), and its connections' keep-alive timer replaced (`keepalive`): hypercorn
builds them inside its worker and offers no hook. Everything else is hypercorn's: the app's
lifespan, one `TCPServer` per connection, the shutdown trigger and the graceful timeout.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

import trio
from hypercorn.config import Config
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.statsd import StatsdLogger
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState, Framework, LifespanState
from hypercorn.utils import ShutdownError, raise_shutdown, repr_socket_addr, wrap_app

from ..admission import Admission
from ..listeners import AdmittingListener
from .expect import gated
from .keepalive import KeepAliveTCPServer


def _listeners(
    config: Config, admission: Admission
) -> tuple[list[trio.abc.Listener[trio.abc.Stream]], list[str]]:
    """hypercorn's listeners for `config`'s sockets, admitting through `admission`; and the
    addresses they are bound to."""
    sockets = config.create_sockets()
    ssl_context = config.create_ssl_context()
    listeners: list[trio.abc.Listener[trio.abc.Stream]] = []
    binds = []
    for secure, sock in (
        *((True, sock) for sock in sockets.secure_sockets),
        *((False, sock) for sock in sockets.insecure_sockets),
    ):
        sock.listen(config.backlog)
        listener: trio.abc.Listener[trio.abc.Stream] = AdmittingListener(
            trio.SocketListener(trio.socket.from_stdlib_socket(sock)), admission
        )
        if ssl_context is not None and secure:
            listener = trio.SSLListener(listener, ssl_context, https_compatible=True)
        listeners.append(listener)
        bind = repr_socket_addr(sock.family, sock.getsockname())
        binds.append(f"{'https' if secure else 'http'}://{bind}")
    return listeners, binds


async def serve(
    app: Framework,
    config: Config,
    admission: Admission,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """As `hypercorn.trio.serve` (one worker, TCP sockets from `config`), admitting connections
    through `admission`; `started()` reports the bound addresses."""
    config.set_statsd_logger_class(StatsdLogger)
    wrapped = wrap_app(app, config.wsgi_max_body_size, None)
    lifespan_state: LifespanState = {}
    lifespan = Lifespan(wrapped, config, lifespan_state)
    context = WorkerContext(None)
    connection = partial(
        KeepAliveTCPServer, wrapped, config, context, ConnectionState(lifespan_state.copy())
    )

    async def handler(stream: trio.abc.Stream) -> None:
        try:
            # hypercorn annotates an SSLStream, and tells TLS from plaintext by what it has.
            await connection(gated(stream))  # type: ignore[arg-type]
        finally:
            # hypercorn leaves a connection open when its TLS handshake fails.
            await getattr(stream, "transport_stream", stream).aclose()

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        listeners, binds = _listeners(config, admission)  # after startup, as hypercorn does
        async with trio.open_nursery() as server_nursery:
            task_status.started(binds)
            try:
                async with trio.open_nursery(strict_exception_groups=True) as nursery:
                    nursery.start_soon(raise_shutdown, shutdown_trigger)
                    nursery.start_soon(raise_shutdown, context.terminate.wait)
                    nursery.start_soon(
                        partial(
                            trio.serve_listeners,
                            handler,
                            listeners,
                            handler_nursery=server_nursery,
                        )
                    )
                    await trio.sleep_forever()
            except BaseExceptionGroup as error:
                _, others = error.split((ShutdownError, KeyboardInterrupt))
                if others is not None:
                    raise others from None
            finally:
                await context.terminated.set()
                server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
