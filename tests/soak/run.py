"""One soak run: PostgreSQL (DATABASE_URL's server or an embedded one) with a fresh migrated and
seeded database, then each in its own process: the daemon, the emitter in gateway mode, the
WebSocket watchers and the webhook receiver; a release upload every few minutes from here.
Every period one line (and a progress bar on a terminal); at the end the verification, the pass
table, JSON and an SVG chart. The emitter first runs a warm-up that the pass table leaves out (see
`figures`), and the webhook is registered when it ends (see `_Webhook`)."""

from __future__ import annotations

import json
import math
import random
import secrets
import sys
import time
from collections import Counter
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import trio
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from droneshield.db import seed
from droneshield.db.pool import connect
from emitter.demo_uploads import file_name, release_pdf
from emitter.versions import RELEASED
from tests.bench.support import Bench, DaemonProcess, console
from tests.support.processes import Spawned, eventually, spawn
from tests.support.releases import upload

from . import figures, probes, verify

SLACK: Final = 2.0  # seconds of tolerance on the offline timeout when judging silences
DRAIN_MIN: Final = 2.0  # seconds after the emitter stops before the outbox is looked at
DRAIN_MAX: Final = 60.0  # seconds the webhook's undelivered events may take to arrive
API_KEY: Final = "soak-" + secrets.token_hex(8)
SECRET: Final = secrets.token_hex(16)
EVENTS: Final = ["sensor.offline", "sensor.online"]
START_TIMEOUT: Final = 120.0  # seconds for a watcher to be up


@dataclass(frozen=True)
class Options:
    sensors: int = 1_000_000
    interval: float = 60.0  # heartbeat, seconds
    minutes: float = 60.0
    workers: int = 1
    period: float = 60.0  # seconds per printed line
    clients: int = 20
    upload_every: float = 180.0  # seconds between release uploads
    out: Path = Path("soak-results")
    seed: int = 1
    warmup: float | None = None  # seconds left out of the figures; None: see warmup_periods

    @property
    def warmup_periods(self) -> int:
        """The warm-up in whole periods (`figures.warmup_periods`), before the `minutes` that
        are measured; by default one heartbeat and one timeout (see `figures`)."""
        seconds = self.interval + self.offline_after if self.warmup is None else self.warmup
        return figures.warmup_periods(seconds, self.period)

    @property
    def seconds(self) -> float:
        """How long the emitter runs: the warm-up, then the measured minutes."""
        return self.warmup_periods * self.period + self.minutes * 60

    @property
    def offline_after(self) -> float:
        """The timeout: one and a half heartbeats (jitter is ± 10 %)."""
        return self.interval * 1.5

    @property
    def gateways(self) -> int:
        """A gateway per 10,000 sensors, 1 to 100."""
        return max(1, min(100, self.sensors // 10_000))


@dataclass
class _Tail:
    """New JSON lines of a file a child appends to."""

    path: Path
    offset: int = 0
    pending: bytes = b""

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = self.pending + f.read()
            self.offset = f.tell()
        *complete, self.pending = data.split(b"\n")
        return [json.loads(line) for line in complete if line]


@dataclass
class _Seen:
    """Everything read from the children so far. Latency samples are `(at, seconds)`, `at` on
    the wall clock, so the warm-up's can be told apart; the counts are the steady state's."""

    phase: figures.Phase
    began: float = field(default_factory=time.time)
    offline: list[dict[str, Any]] = field(default_factory=list)
    online: int = 0
    bad_signatures: int = 0
    posts: int = 0
    final: dict[str, Any] | None = None
    offered: int = 0
    failed: int = 0
    offline_late: list[tuple[float, float]] = field(default_factory=list)
    ws: list[tuple[float, float]] = field(default_factory=list)
    hook: list[tuple[float, float]] = field(default_factory=list)
    tails: dict[str, _Tail] = field(default_factory=dict)


async def run(options: Options, server_url: str) -> dict[str, Any]:
    """The soak against `server_url`'s PostgreSQL; returns the report (also written to
    `options.out`)."""
    options.out.mkdir(parents=True, exist_ok=True)
    files = {name: options.out / f"{name}.jsonl" for name in ("emitter", "ws", "hooks")}
    for path in files.values():
        path.unlink(missing_ok=True)
    bench = Bench(quick=False, server_url=server_url)
    try:
        async with AsyncExitStack() as stack:
            # Each child is waited for only when it is needed, so that the Python processes
            # start up while the database is seeded and the daemon starts (seconds each on a
            # busy machine).
            hooks = await stack.enter_async_context(
                _child("tests.soak.watchers", "hooks", files["hooks"], SECRET)
            )
            url = await stack.enter_async_context(bench.database())
            async with connect(url) as conn:
                await seed.seed(conn, options.sensors)
                await conn.execute("VACUUM ANALYZE sensor")
            daemon = await stack.enter_async_context(
                bench.daemon(
                    url,
                    offline_after=options.offline_after,
                    workers=options.workers,
                    api_key=API_KEY,
                    webhook_allow_hosts="127.0.0.1",
                )
            )
            return await _soak(options, url, daemon, hooks, files)
    finally:
        await trio.to_thread.run_sync(bench.drop_all)


def _child(module: str, *args: object) -> AbstractAsyncContextManager[Spawned]:
    return spawn([sys.executable, "-m", module, *map(str, args)])


async def _soak(
    options: Options, url: str, daemon: DaemonProcess, hooks: Spawned, files: dict[str, Path]
) -> dict[str, Any]:
    async with (
        AsyncExitStack() as stack,
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{daemon.http_port}",
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=30,
        ) as api,
    ):
        ws = await stack.enter_async_context(
            _child(
                "tests.soak.watchers",
                "ws",
                daemon.http_port,
                options.clients,
                options.sensors,
                files["ws"],
            )
        )
        webhook = _Webhook(api, hooks)
        if not options.warmup_periods:
            await webhook.register()
        for version in RELEASED:  # the fleet's versions; 4.0.0 is never uploaded
            await _upload(api, version)
        # The emitter starts up while the watchers connect: both are in time for the warm-up.
        emitter = await stack.enter_async_context(
            _child(
                "emitter",
                "gateways",
                "--target",
                f"127.0.0.1:{daemon.grpc_port}",
                "--database-url",
                url,
                "--seed",
                options.seed,
                "--duration",
                options.seconds,
                "--interval",
                options.interval,
                "--silence",
                options.offline_after * 3,
                "--churn",
                0.05,
                "--never",
                0.02,
                "--upgrade-every",
                options.interval * 30,
                "--gateways",
                options.gateways,
                "--period",
                options.period,
                "--gap-min",
                options.offline_after - SLACK,
                "--record",
                files["emitter"],
                "--log-level",
                "WARNING",
            )
        )
        await _started(ws, "watching")
        rows, seen = await _watch(options, url, daemon, emitter, files, webhook)
        if webhook.id is not None:
            await _drain(api, webhook.id)
        _consume(options, files, seen, {}, final_only=True)
        async with trio.open_nursery() as nursery:  # together: each is a Python shutdown
            for child in (ws, hooks, daemon.spawned):
                nursery.start_soon(child.stop)
    return await _report(options, url, rows, seen, webhook.since)


@dataclass
class _Webhook:
    """The receiver's subscription. With a warm-up it is registered when the warm-up ends: the
    outbox holds events for the webhooks that exist when they commit, so the start-up wave
    (every sensor's first report is a `sensor.online`) is never queued for it, and its lateness
    is the steady state's, not a backlog's."""

    api: httpx.AsyncClient
    receiver: Spawned
    id: int | None = None
    since: float | None = None  # wall clock once registered: later events reach the receiver

    async def register(self) -> None:
        port = await _started(self.receiver, "port ")
        response = await self.api.post(
            "/webhooks",
            json={
                "url": f"http://127.0.0.1:{port.split()[-1]}/hook",
                "events": EVENTS,
                "secret": SECRET,
            },
        )
        response.raise_for_status()
        self.id = response.json()["id"]
        self.since = time.time()


async def _drain(api: httpx.AsyncClient, hook_id: int) -> None:
    """Wait until the webhook has nothing pending (events committed before the emitter stopped
    are delivered), at most DRAIN_MAX: what has not arrived by then counts as missed."""
    await trio.sleep(DRAIN_MIN)

    async def delivered() -> bool:
        return not (await api.get(f"/webhooks/{hook_id}")).json()["pending"]

    with trio.move_on_after(DRAIN_MAX):
        await eventually(delivered)
    await trio.sleep(0.5)  # the receiver writes a POST's lines before it answers


async def _started(child: Spawned, text: str) -> str:
    with trio.fail_after(START_TIMEOUT):
        return await child.wait_for(text)


async def _upload(api: httpx.AsyncClient, version: str) -> None:
    response = await upload(api, [(file_name(version), release_pdf(version))])
    if response.status_code not in (200, 201, 409):
        raise RuntimeError(f"upload of {version}: {response.status_code} {response.text}")


def _consume(
    options: Options,
    files: dict[str, Path],
    seen: _Seen,
    window: dict[str, Any],
    *,
    final_only: bool = False,
) -> None:
    """Read the children's new lines into `seen` (whole run) and `window` (this period)."""
    if not seen.tails:
        seen.tails = {name: _Tail(path) for name, path in files.items()}
    tails = seen.tails
    for line in tails["emitter"].read():
        if line["kind"] == "final":
            seen.final = line
        elif not final_only:
            window.setdefault("periods", []).append(line)
            if seen.phase.warm(line):
                window["warm"] = True
            else:
                seen.offered += line["offered"]
                seen.failed += line["failed"]
    for line in tails["ws"].read():
        seen.ws += [(line["at"], late) for late in line["latencies"]]
        window.setdefault("ws", []).extend(line["latencies"])
    for line in tails["hooks"].read():
        if line.get("kind") == "post":
            seen.posts += 1
            window["posts"] = window.get("posts", 0) + 1
        elif line.get("kind") == "bad_signature":
            seen.bad_signatures += 1
        else:
            at = line["occurredAt"]
            hook = line["received"] - at
            seen.hook.append((at, hook))
            window.setdefault("hook", []).append(hook)
            if line["type"] == "sensor.offline":
                seen.offline.append(line)
                late = at - (line["lastSeenAt"] + options.offline_after)
                seen.offline_late.append((at, late))
                window.setdefault("late", []).append(late)
            else:
                seen.online += 1


async def _watch(
    options: Options,
    url: str,
    daemon: DaemonProcess,
    emitter: Spawned,
    files: dict[str, Path],
    webhook: _Webhook,
) -> tuple[list[dict[str, Any]], _Seen]:
    """Until the emitter exits: a row every period, an upload every `upload_every` s, the
    webhook registered once the warm-up is over."""
    seen = _Seen(figures.Phase(options.warmup_periods))
    rows: list[dict[str, Any]] = []
    began = seen.began
    before = await probes.sample(began, daemon.pid, emitter.process.pid, daemon.http_port, url)
    window: dict[str, Any] = {}
    next_upload = began + options.upload_every
    uploads = 0
    progress = Progress(
        TextColumn("soak"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    with progress:
        task = progress.add_task("soak", total=options.seconds)
        while emitter.process.returncode is None:
            await trio.sleep(1.0)
            now = time.time()
            progress.update(task, completed=min(now - began, options.seconds))
            if now >= next_upload:
                uploads += 1
                await _upload(webhook.api, f"5.0.{uploads}")
                next_upload += options.upload_every
            _consume(options, files, seen, window)
            if webhook.id is None and seen.phase.since is not None:
                await webhook.register()
            if window.get("periods"):  # a row per emitter period, as its line arrives
                before = await _row(url, daemon, emitter, window, rows, before, seen)
                window = {}
    if await emitter.exited() != 0:
        raise RuntimeError(f"the emitter failed:\n{emitter.output()}")
    _consume(options, files, seen, window)
    await _row(url, daemon, emitter, window, rows, before, seen)
    return rows, seen


async def _row(
    url: str,
    daemon: DaemonProcess,
    emitter: Spawned,
    window: dict[str, Any],
    rows: list[dict[str, Any]],
    before: probes.Sample,
    seen: _Seen,
) -> probes.Sample:
    """Print and keep the row of `window` (what was read since the last row)."""
    after = await probes.sample(time.time(), daemon.pid, emitter.process.pid, daemon.http_port, url)
    periods = window.get("periods", [])
    errors: Counter[str] = Counter()
    for period in periods:
        errors.update(period["errors"])
    w = figures.Window(
        seconds=sum(p["seconds"] for p in periods) or (after.at - before.at),
        offered=sum(p["offered"] for p in periods),
        acked=sum(p["acked"] for p in periods),
        ack_p50=max((p["ack_p50_ms"] or 0 for p in periods), default=None),
        ack_p99=max((p["ack_p99_ms"] or 0 for p in periods), default=None),
        errors=errors,
        offline_late=window.get("late", []),
        ws=window.get("ws", []),
        hook=window.get("hook", []),
        posts=window.get("posts", 0),
        before=before,
        after=after,
    )
    row = w.row(after.at - seen.began, window.get("warm", seen.phase.since is None))
    rows.append(row)
    console.print(figures.line(row))
    return after


async def _report(
    options: Options,
    url: str,
    rows: list[dict[str, Any]],
    seen: _Seen,
    watched_from: float | None,
) -> dict[str, Any]:
    final = seen.final
    if final is None:
        raise RuntimeError("the emitter wrote no final record")
    offline, duplicates = verify.dedupe([e for e in seen.offline if e["occurredAt"] <= final["at"]])
    lost = await verify.lost(url, final["last_acked"], random.Random(options.seed))
    silences = verify.silences(
        final, offline, options.offline_after, SLACK, final["at"], watched_from
    )
    since = seen.phase.since
    steady_from = None if since is None else round((since - seen.began) / 60, 2)
    table = figures.criteria(
        seen.offered,
        seen.offered - seen.failed,
        lost["lost"],
        figures.steady(seen.offline_late, since),
        figures.steady(seen.ws, since),
        figures.steady(seen.hook, since),
        rows,
        math.inf if steady_from is None else steady_from,
    )
    verified = silences["missed"] == 0 and silences["invented"] == 0 and lost["lost"] == 0
    report = {
        "options": {**asdict(options), "out": str(options.out)},
        "offline_after": options.offline_after,
        "gateways": options.gateways,
        "offered": final["offered"],
        "acked": final["acked"],
        "steady": {
            "warmup_s": options.warmup_periods * options.period,
            "from_minute": steady_from,
            "offered": seen.offered,
            "failed": seen.failed,
        },
        "rows": rows,
        "criteria": table,
        "passed": all(c["met"] is not False for c in table),
        "verification": {
            **lost,
            **silences,
            "duplicate_events": duplicates,
            "online_events": seen.online,
            "bad_signatures": seen.bad_signatures,
            "posts": seen.posts,
            "ok": verified and seen.bad_signatures == 0,
        },
        "exhausted": figures.exhausted(rows, options.workers),
    }
    title = (
        f"soak: {options.sensors:,} sensors every {options.interval:g} s, "
        f"{options.minutes:g} min, {options.workers} worker(s)"
    )
    (options.out / "soak.json").write_text(json.dumps(report, indent=2, default=str))
    shaded = math.inf if steady_from is None else steady_from
    (options.out / "soak.svg").write_text(figures.svg(rows, title, shaded))
    return report
