"""Who may open a connection on a port: caps on the port and per client address, in the spirit of
nginx's `limit_conn` per `$binary_remote_addr`, and a connection rate per address.

Per-connection budgets (`ingest/budgets.py`) send a flooding connection away, but parsing HTTP/2
in Python is dear: an attacker who reconnects at once would still keep the daemon's core busy
with the frames each new connection may send before its budget is spent, while the normal
clients on other addresses wait. So each server asks here when it accepts a connection, before a
byte of it is parsed (no TLS handshake, no HTTP, no task), and closes at once what is refused:
beyond `max_connections` open on the port, `per_address` open from one address, or `rate` new
ones from one address within a second; and for `penalty` seconds after a connection from that
address broke a frame budget (a well-behaved client never does).

"Address" is the TCP peer: behind NAT or a gateway a whole site is one address (the defaults are
far above what such a fleet opens), and behind a load balancer every client is the balancer's
address (the limits then belong in the balancer). IPv6 addresses count by their /64, the block
one host is usually given.

Rules only: the caller passes `now` (its clock) and closes what is refused.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Final

log = logging.getLogger(__name__)

RATE_WINDOW: Final = 1.0  # seconds over which new connections per address are counted
WARNING_INTERVAL: Final = 60.0  # seconds between warnings about refused or closed connections
IPV6_PREFIX: Final = 64  # bits of an IPv6 address that name one client


@dataclass(frozen=True)
class Limits:
    """One port's limits, from `Settings` (README, Security)."""

    max_connections: int  # open on the port at once
    per_address: int  # open from one address at once
    rate: int  # new connections from one address per second
    penalty: float = 0.0  # seconds an address is refused after breaking a frame budget


def address_key(host: str) -> str:
    """The client `host` (a peer address as the socket gives it) as limits count it."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])  # without an IPv6 zone
    except ValueError:
        return host  # not an IP (a Unix socket's peer): counted as it is
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)


class Admission:
    """One port's open connections by address, and the rules that admit a new one.

    Memory is bounded by what is open plus the addresses seen within the last second and those
    penalised: the rate's counts start afresh every second, and expired penalties are dropped
    then.
    """

    def __init__(self, limits: Limits, port_name: str) -> None:
        self.limits = limits
        self._port_name = port_name
        self.open = 0
        self._by_address: Counter[str] = Counter()
        self._new: Counter[str] = Counter()
        self._window_start = float("-inf")
        self._penalised: dict[str, float] = {}  # address: refused until
        self._closed: Counter[str] = Counter()
        self._last_warning = float("-inf")

    def admit(self, address: str, now: float) -> bool:
        """Whether a connection from `address` may be served; counted as open if so (the
        caller then `release`s it when it ends)."""
        reason = self._refusal(address, now)
        if reason is not None:
            self.count(reason, now)
            return False
        self.open += 1
        self._by_address[address] += 1
        return True

    def _refusal(self, address: str, now: float) -> str | None:
        if now - self._window_start >= RATE_WINDOW:
            self._window_start = now
            self._new.clear()
            self._penalised = {a: until for a, until in self._penalised.items() if until > now}
        self._new[address] += 1
        if self._penalised.get(address, now) > now:
            return "address penalised for a broken budget"
        if self.open >= self.limits.max_connections:
            return "connection limit"
        if self._by_address[address] >= self.limits.per_address:
            return "connections per address"
        if self._new[address] > self.limits.rate:
            return "connection rate per address"
        return None

    def release(self, address: str) -> None:
        """A connection `admit` let in has ended."""
        self.open -= 1
        self._by_address[address] -= 1
        if self._by_address[address] <= 0:
            del self._by_address[address]

    def penalise(self, address: str, now: float) -> None:
        """A connection from `address` broke a frame budget: refuse the address for a while."""
        if self.limits.penalty > 0:
            self._penalised[address] = now + self.limits.penalty

    def count(self, reason: str, now: float) -> None:
        """Count a connection refused or closed for `reason`; warn at most once per interval (an
        attack closes thousands: one line each would flood the log)."""
        self._closed[reason] += 1
        if now - self._last_warning >= WARNING_INTERVAL:
            self._last_warning = now
            log.warning(
                "%s connections refused or closed: %s (%d open)",
                self._port_name,
                ", ".join(f"{why} {count}" for why, count in sorted(self._closed.items())),
                self.open,
            )
            self._closed.clear()
