"""Where a webhook may send: http(s) URLs whose every address is public, unless its host or
address is listed in `webhook_allow_hosts`.

A webhook must not become a way to reach the daemon's own network (loopback, private,
link-local, the cloud metadata address 169.254.169.254, …). The URL is checked when the webhook
is created, and its name resolved and checked again before every POST, which then goes to the
address that was checked (a name that resolved to a public address at creation may resolve to a
private one later: DNS rebinding).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import trio

from .errors import Invalid

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class TargetRefused(Invalid):
    """A webhook URL that httpx cannot send to or that is not http(s), or whose host is (or
    resolves to) an internal address not allowed by the settings."""

    code = "webhook_target_refused"


class TargetUnresolved(TargetRefused):
    """A webhook's host name that does not resolve. Refused when a webhook is created; when
    delivering, a network error like a refused connection (DNS may be failing for a while:
    EAI_AGAIN, a timeout), retried with backoff."""


@dataclass(frozen=True)
class AllowList:
    """Hosts (by name, as written in URLs) and networks that may be targets although not
    public."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IpNetwork, ...] = field(default=())

    @classmethod
    def parse(cls, raw: str | None) -> AllowList:
        """`"127.0.0.1, hooks.internal, 10.0.0.0/8"`.

        Raises:
            ValueError: an entry looks like a network but is not one.
        """
        hosts: set[str] = set()
        networks: list[IpNetwork] = []
        for entry in (raw or "").split(","):
            entry = entry.strip().lower()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if "/" in entry:
                    raise ValueError(f"{entry!r} is not a network") from None
                hosts.add(_ascii_host(entry.strip("[]")))
        return cls(frozenset(hosts), tuple(networks))

    def allows(self, address: IpAddress) -> bool:
        if any(address in n for n in self.networks):
            return True
        if not address.is_global or address in _LOCAL_NAT64:
            return False
        inner = _embedded_ipv4(address)
        return inner is None or inner.is_global


# IPv6 addresses that carry an IPv4 one a gateway forwards to: Python counts them global
# whatever they carry, so `64:ff9b::10.0.0.1` reached a private address through NAT64.
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052, the IPv4 in the last 32 bits
_LOCAL_NAT64: Final = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: a site's own, refused


def _embedded_ipv4(address: IpAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address a NAT64 or 6to4 address leads to; None for others."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return address.sixtofour


def _ascii_host(host: str) -> str:
    """`host` as targets name it (`Target.host`): an internationalised name in its IDNA form.

    Raises:
        ValueError: a name with no IDNA form.
    """
    if host.isascii():
        return host
    try:
        return parse(f"http://{host}/").host  # read as a webhook URL's host is
    except TargetRefused as exc:
        raise ValueError(f"{host!r} is not a host name: {exc.message}") from None


DEFAULT_PORTS: Final = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Target:
    """A webhook URL as it is stored and sent to: `url` with its host in ASCII (an
    internationalised name in its IDNA form, `xn--…`, as DNS, TLS and the Host header need it)."""

    url: str
    scheme: str
    host: str  # lower case, IPv6 without brackets
    port: int

    @property
    def authority(self) -> str:
        """The Host header: `host[:port]`, IPv6 in brackets, the port only when not the
        scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


def parse(url: str) -> Target:
    """The URL read as httpx reads it when the dispatcher sends, so what is accepted when a
    webhook is created can be sent to.

    Raises:
        TargetRefused: not an absolute http(s) URL with a host and a port of 1 to 65535 (httpx
            refuses control characters and names with no IDNA form), or it carries credentials.
    """
    import httpx  # imported by the first webhook: a start without any does not pay for it

    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise TargetRefused(f"not a valid URL: {exc}") from None
    if parsed.scheme not in DEFAULT_PORTS or not parsed.raw_host:
        raise TargetRefused("the URL must be http:// or https:// with a host")
    if parsed.userinfo:
        raise TargetRefused("the URL must not carry credentials (the secret signs each POST)")
    port = DEFAULT_PORTS[parsed.scheme] if parsed.port is None else parsed.port
    if not 0 < port < 65536:
        raise TargetRefused(f"port {port} is not a TCP port")
    return Target(str(parsed), parsed.scheme, parsed.raw_host.decode("ascii").lower(), port)


async def resolve(target: Target, allow: AllowList) -> list[IpAddress]:
    """The target's addresses, all of them checked.

    Raises:
        TargetUnresolved: the name does not resolve (now).
        TargetRefused: one of its addresses is internal and neither it nor the host is allowed.
    """
    try:
        infos = await trio.socket.getaddrinfo(
            target.host, target.port, type=trio.socket.SOCK_STREAM
        )
    except OSError as exc:
        raise TargetUnresolved(f"{target.host} does not resolve: {exc.strerror or exc}") from None
    addresses = list(dict.fromkeys(ipaddress.ip_address(i[4][0]) for i in infos))
    if target.host not in allow.hosts:
        refused: Sequence[IpAddress] = [a for a in addresses if not allow.allows(a)]
        if refused:
            raise TargetRefused(
                f"{target.host} resolves to {refused[0]}, an internal address "
                "(allow it with DRONESHIELD_WEBHOOK_ALLOW_HOSTS)"
            )
    return addresses
