"""Listening ports that several processes share (`droneshield serve --workers`)."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import DroneshieldError


class PortInUse(DroneshieldError):
    """Another program (or another droneshield) listens on a port this one must bind."""

    code = "port_in_use"

    def __init__(self, what: str, host: str, port: int) -> None:
        shown = f"[{host}]" if ":" in host else host
        super().__init__(f"{what} port {shown}:{port} is in use")


def _address_in_use(exc: BaseException) -> bool:
    """Whether `exc` (or what it groups) is EADDRINUSE, however a server library wrapped it."""
    if isinstance(exc, BaseExceptionGroup):
        return any(_address_in_use(e) for e in exc.exceptions)
    return isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE


@contextmanager
def naming(what: str, host: str, port: int) -> Iterator[None]:
    """Bind `what` (`HTTP`, `gRPC`) in the block; a taken port becomes a PortInUse that says
    which server and which address, instead of a bare `[Errno 98]`.

    Raises:
        PortInUse: the block failed because the address is in use.
    """
    try:
        yield
    except BaseException as exc:
        if _address_in_use(exc):
            raise PortInUse(what, host, port) from exc
        raise


def ensure_free(what: str, host: str, port: int) -> None:
    """Check now, by binding and letting go, that `what` can listen on `host:port` (0 always
    can): a supervisor says so once, before it starts children that would each fail.

    Raises:
        PortInUse: someone listens there.
    """
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with naming(what, host, port), socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))


def shared_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound (not listening) to `host:port` with SO_REUSEPORT, so other processes
    of this user can bind the same port; Linux spreads new connections over those listening.

    Raises:
        OSError: the port is taken by a socket without SO_REUSEPORT (or another user's), or
            the platform has no SO_REUSEPORT.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def claim(what: str, host: str, port: int) -> socket.socket:
    """Claim `host:port` for one worker group of this user, until the returned socket closes
    (with the process, however it ends): an abstract Unix socket named after the address.

    SO_REUSEPORT lets any process of this user bind a port the group shares, so a second group
    would bind it too and the kernel would split connections between the two; a plain bind
    (`ensure_free`) refuses only once a worker listens, not while the first group starts.

    Raises:
        PortInUse: another group of this user claims it.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with naming(what, host, port):
            sock.bind(f"\0droneshield-{os.getuid()}-port-{host}:{port}")
    except BaseException:
        sock.close()
        raise
    return sock
