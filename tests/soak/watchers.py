"""The soak's watchers, each its own process writing JSON lines the runner reads:

- `ws PORT CLIENTS FLEET OUT`: dashboard clients on `/ws`. Half watch a page of 50 serials (as
  the table does), a quarter a serial-prefix filter (the search box), a quarter the offline
  filter. For every sensor change received: now minus the change's `lastSeenAt`, the report's commit
  time on the daemon's (same) wall clock, so report → WebSocket.
- `hooks OUT SECRET`: a webhook receiver; prints its port, checks every POST's signature, writes
  one line per sensor event (`id`, `type`, `serial`, `occurredAt`, `lastSeenAt`, `received`).

Run as `python -m tests.soak.watchers …`; both run until SIGTERM/SIGINT.
"""

from __future__ import annotations

import json
import random
import sys
import time
from datetime import datetime
from typing import Any, Final, TextIO

import trio

from droneshield.db.seed import serial_for
from tests.bench import load
from tests.support.live_client import open_live
from tests.support.receivers import Received, Receiver, signed_correctly

PAGE: Final = 50
FLUSH: Final = 1.0  # seconds between lines of latencies


def _epoch(iso: str | None) -> float | None:
    return None if iso is None else datetime.fromisoformat(iso).timestamp()


def subscriptions(clients: int, fleet: int, rng: random.Random) -> list[dict[str, Any]]:
    """What each dashboard client subscribes to: pages of serials, prefix filters, the offline
    filter (in that proportion, 2:1:1)."""
    out: list[dict[str, Any]] = []
    for c in range(clients):
        kind = c % 4
        if kind in (0, 1):
            first = rng.randrange(1, max(2, fleet - PAGE))
            serials = [serial_for(n) for n in range(first, min(fleet, first + PAGE - 1) + 1)]
            out.append({"serials": serials})
        elif kind == 2:
            # Serials DS-0000xyz*: a thousand-odd sensors at most, like a search.
            prefix = serial_for(rng.randrange(1, fleet + 1))[:-3]
            out.append({"filter": {"q": prefix}})
        else:
            out.append({"filter": {"status": "offline"}})
    return out


async def _ws(port: int, clients: int, fleet: int, out: TextIO) -> None:
    latencies: list[float] = []

    async def client(want: dict[str, Any], *, task_status: trio.TaskStatus[None]) -> None:
        async with open_live(port) as live:
            await live.subscribe(want.get("serials"), want.get("filter"))
            task_status.started()
            while True:
                message = await live.next("sensor")
                now = time.time()
                for item in message["sensors"]:
                    seen = _epoch(item["lastSeenAt"])
                    if seen is not None and item["status"] == "online":
                        latencies.append(now - seen)

    async def flush() -> None:
        while True:
            await trio.sleep(FLUSH)
            batch, latencies[:] = list(latencies), []
            out.write(json.dumps({"at": time.time(), "latencies": batch}) + "\n")
            out.flush()

    wants = subscriptions(clients, fleet, random.Random(fleet))
    async with trio.open_nursery() as nursery:
        await load.start_all(nursery, client, [(w,) for w in wants], 10)
        print("watching", flush=True)
        nursery.start_soon(flush)


def _hook_lines(received: Received, secret: str, now: float) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    if not signed_correctly(secret, received):
        return [{"kind": "bad_signature", "received": now}]
    for event in received.events:
        sensor = event.get("sensor") or {}
        lines.append(
            {
                "id": event["id"],
                "type": event["type"],
                "serial": sensor.get("serial"),
                "occurredAt": _epoch(event["occurredAt"]),
                "lastSeenAt": _epoch(sensor.get("lastSeenAt")),
                "received": now,
            }
        )
    lines.append({"kind": "post", "events": len(received.events), "received": now})
    return lines


async def _hooks(out: TextIO, secret: str) -> None:
    def answer(received: Received) -> int:
        for line in _hook_lines(received, secret, time.time()):
            out.write(json.dumps(line) + "\n")
        out.flush()
        return 200

    receiver = Receiver(answer=answer, keep=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(receiver.serve)
        print(f"port {receiver.port}", flush=True)


def main(argv: list[str]) -> None:
    kind, *args = argv
    if kind == "ws":
        port, clients, fleet, path = args
        with open(path, "a") as out:
            trio.run(_ws, int(port), int(clients), int(fleet), out)
    else:
        path, secret = args
        with open(path, "a") as out:
            trio.run(_hooks, out, secret)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:
        pass
