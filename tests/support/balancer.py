"""HAProxy in front of daemons, for tests and benchmarks: the shipped configuration
(`deploy/haproxy/haproxy.cfg`) run by a real `haproxy` process, its addresses filled in from the
environment as an operator would, ready once it counts every daemon as up."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

import httpx
import pytest

from .processes import ROOT, Spawned, eventually, free_port, spawn

CONFIG: Final = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
HAPROXY: Final = shutil.which("haproxy", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
_UP: Final = re.compile(r'haproxy_server_status\{proxy="daemons",server="([^"]+)",state="UP"\} 1')
_SERVER: Final = re.compile(r'^\s*server\s+(\S+)\s+"\$\{DRONESHIELD_DAEMON_(\d+)\}"', re.MULTILINE)


@dataclass(frozen=True)
class Balancer:
    spawned: Spawned
    port: int  # where gRPC clients connect
    stats_port: int  # HAProxy's /metrics and /healthz

    @property
    def pid(self) -> int:
        return self.spawned.process.pid


def server_names() -> dict[int, str]:
    """The shipped configuration's backend servers: daemon number → server name."""
    return {int(n): name for name, n in _SERVER.findall(CONFIG.read_text())}


async def servers_up(stats_port: int) -> set[str]:
    """The servers HAProxy currently counts as up (from its Prometheus exporter)."""
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"http://127.0.0.1:{stats_port}/metrics")).text
    return set(
        re.findall(r'haproxy_server_status\{proxy="daemons",server="([^"]+)",state="UP"\} 1', text)
    )


@asynccontextmanager
async def haproxy(daemons: Sequence[tuple[int, int]]) -> AsyncIterator[Balancer]:
    """HAProxy with the shipped configuration in front of `daemons` ((gRPC port, HTTP port) on
    127.0.0.1, as many as the configuration has servers), once it counts all of them as up
    (the caller bounds the wait). Stopped on leaving.

    Skips the test when HAProxy is not installed (`.ci/run` installs it where it can)."""
    if HAPROXY is None:
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    names = server_names()
    assert len(daemons) == len(names), f"the configuration has {len(names)} servers"
    port, stats_port = free_port(), free_port()
    env = {
        **os.environ,
        "DRONESHIELD_LB_BIND": f"127.0.0.1:{port}",
        "DRONESHIELD_LB_STATS_BIND": f"127.0.0.1:{stats_port}",
    }
    for n, (grpc_port, http_port) in enumerate(daemons, start=1):
        env[f"DRONESHIELD_DAEMON_{n}"] = f"127.0.0.1:{grpc_port}"
        env[f"DRONESHIELD_DAEMON_{n}_HTTP_PORT"] = str(http_port)
    # -db: stay in the foreground, so the process is HAProxy itself and its output ours.
    async with spawn([HAPROXY, "-db", "-f", str(CONFIG)], env=env) as spawned:

        async def all_up() -> bool:
            try:
                return await servers_up(stats_port) == set(names.values())
            except httpx.TransportError:
                assert spawned.process.returncode is None, spawned.output()
                return False

        await eventually(all_up)
        yield Balancer(spawned, port, stats_port)
