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
from urllib.parse import urlsplit

import trio

from .errors import Invalid

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class TargetRefused(Invalid):
    """A webhook URL that is not http(s), or whose host is (or resolves to) an internal
    address not allowed by the settings."""

    code = "webhook_target_refused"


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
                hosts.add(entry.strip("[]"))
        return cls(frozenset(hosts), tuple(networks))

    def allows(self, address: IpAddress) -> bool:
        return address.is_global or any(address in n for n in self.networks)


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int


def parse(url: str) -> Target:
    """Raises:
    TargetRefused: not an absolute http(s) URL with a host, or it carries credentials.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise TargetRefused(f"{url!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused("the URL must be http:// or https:// with a host")
    if parts.username or parts.password:
        raise TargetRefused("the URL must not carry credentials (the secret signs each POST)")
    default = 443 if parts.scheme == "https" else 80
    return Target(parts.scheme, parts.hostname.lower(), port or default)


async def resolve(target: Target, allow: AllowList) -> list[IpAddress]:
    """The target's addresses, all of them checked.

    Raises:
        TargetRefused: the name does not resolve, or one of its addresses is internal and
            neither it nor the host is allowed.
    """
    try:
        infos = await trio.socket.getaddrinfo(
            target.host, target.port, type=trio.socket.SOCK_STREAM
        )
    except OSError as exc:
        raise TargetRefused(f"{target.host} does not resolve: {exc.strerror or exc}") from None
    addresses = list(dict.fromkeys(ipaddress.ip_address(i[4][0]) for i in infos))
    if target.host not in allow.hosts:
        refused: Sequence[IpAddress] = [a for a in addresses if not allow.allows(a)]
        if refused:
            raise TargetRefused(
                f"{target.host} resolves to {refused[0]}, an internal address "
                "(allow it with DRONESHIELD_WEBHOOK_ALLOW_HOSTS)"
            )
    return addresses
