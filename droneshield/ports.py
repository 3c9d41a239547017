"""Listening ports that several processes share (`droneshield serve --workers`)."""

from __future__ import annotations

import socket


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
