"""How much of a client's own input an answer or an error may repeat.

Saying which value was wrong helps a client; repeating all of it lets anyone make the daemon
hold and send back megabytes per call (a 3 MB version string in every ack, kept in memory for
as long as the client leaves its receive window closed). Every message built from client input
shows it through `echo`.
"""

from __future__ import annotations

from typing import Final

ECHO_MAX: Final = 64  # characters of client input repeated, then "…"


def clip(value: str) -> str:
    """`value` cut to its first ECHO_MAX characters, then "…"."""
    return value if len(value) <= ECHO_MAX else value[:ECHO_MAX] + "…"


def echo(value: str) -> str:
    """`value` quoted as Python's repr does, cut to its first ECHO_MAX characters."""
    if len(value) <= ECHO_MAX:
        return repr(value)
    return repr(value[:ECHO_MAX]) + "…"
