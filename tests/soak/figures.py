"""The soak's figures: one row per period from the children's lines and the probes, the pass
criteria judged on the steady state (after the warm-up), which resource ran out first, and the
chart (hand-written SVG: no plotting library for four polylines).

The warm-up: the fleet is seeded never seen, so in its first heartbeat every sensor's first
report is a transition (an event, a webhook event, a WebSocket change) and no silence has timed
out yet. Those minutes measure start-up, not the fleet an hour in, so their samples and rows are
left out of the pass table and the RSS baseline (the run still verifies them)."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from .probes import Sample

ACKED_GOAL: Final = 0.99
OFFLINE_LATE_GOAL: Final = 1000.0  # ms, p99
WS_GOAL: Final = 250.0  # ms, p99
HOOK_GOAL: Final = 2000.0  # ms, p99
RSS_GROWTH_GOAL: Final = 5.0  # MB per 10 minutes, after the first 10 minutes
RSS_SETTLE: Final = 600.0  # seconds before the RSS slope counts
CPU_SATURATED: Final = 90.0  # % of one core: a single-threaded process that is out of CPU
MACHINE_SATURATED: Final = 90.0  # % of all cores busy: whoever runs is waiting for a core
COMMIT_SLOW: Final = 500.0  # ms mean group commit: the writer cannot keep up with a 1 s flush


def p(samples: Sequence[float], q: int) -> float | None:
    """The q-th percentile in milliseconds of `samples` (seconds); None without samples."""
    if not samples:
        return None
    if len(samples) == 1:
        return samples[0] * 1000
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1] * 1000


def warmup_periods(seconds: float, period: float) -> int:
    """The whole periods that cover `seconds` of warm-up, so that no row straddles its end.
    Long enough by default (`run.Options`): one heartbeat (every sensor's first report) and one
    timeout (the offline events of the first silences reach their steady rate)."""
    return max(0, math.ceil(seconds / period - 1e-9))


@dataclass
class Phase:
    """Which of the emitter's period lines belong to the warm-up (the first `periods` of them),
    and when, on the emitter's wall clock, the steady state began."""

    periods: int
    seen: int = 0
    since: float | None = None  # the end of the last warm-up period; None until known

    def warm(self, line: dict[str, Any]) -> bool:
        """Count the emitter's next period `line`; True when it is a warm-up period."""
        if self.seen == 0 and self.periods == 0:
            self.since = line["at"] - line["seconds"]
        self.seen += 1
        if self.seen == self.periods:
            self.since = line["at"]
        return self.seen <= self.periods


def steady(samples: Sequence[tuple[float, float]], since: float | None) -> list[float]:
    """The values of `(at, value)` samples taken once the steady state began (none before it is
    known)."""
    return [] if since is None else [value for at, value in samples if at >= since]


@dataclass
class Window:
    """Everything seen during one period."""

    seconds: float
    offered: int
    acked: int
    ack_p50: float | None
    ack_p99: float | None
    errors: Counter[str]
    offline_late: list[float]  # seconds each offline came after its deadline
    ws: list[float]  # seconds from commit to a WebSocket client
    hook: list[float]  # seconds from an event to its webhook POST
    posts: int
    before: Sample
    after: Sample

    def row(self, elapsed: float, warm: bool) -> dict[str, Any]:
        span = max(self.after.at - self.before.at, 1e-9)
        commits = self.after.commit[1] - self.before.commit[1]
        commit_ms = (
            (self.after.commit[0] - self.before.commit[0]) / commits * 1000 if commits else None
        )
        return {
            "minute": round(elapsed / 60, 2),
            "warmup": warm,
            "offered_per_s": round(self.offered / self.seconds, 1),
            "acked_per_s": round(self.acked / self.seconds, 1),
            "ack_p50_ms": self.ack_p50,
            "ack_p99_ms": self.ack_p99,
            "offline_late_p99_ms": p(self.offline_late, 99),
            "offline_events": len(self.offline_late),
            "ws_p99_ms": p(self.ws, 99),
            "hook_p99_ms": p(self.hook, 99),
            "posts_per_min": round(self.posts / self.seconds * 60, 1),
            "daemon_cpu_pct": round((self.after.daemon_cpu - self.before.daemon_cpu) / span * 100),
            "daemon_rss_mb": round(self.after.daemon_mb, 1),
            "pg_cpu_pct": round(max(0.0, self.after.pg_cpu - self.before.pg_cpu) / span * 100),
            "pg_mb": round(self.after.pg_mb, 1),
            # max: a process that has ended reads 0 (the emitter's, in the final row)
            "emitter_cpu_pct": round(
                max(0.0, self.after.emitter_cpu - self.before.emitter_cpu) / span * 100
            ),
            "machine_cpu_pct": round(_busy(self.before.machine, self.after.machine)),
            "db_mb": round(self.after.db_mb, 1),
            "commit_ms": None if commit_ms is None else round(commit_ms, 1),
            "errors": dict(self.errors),
        }


def _busy(before: tuple[float, float], after: tuple[float, float]) -> float:
    """The share (%) of all the machine's cores that was busy between two readings."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total * 100 if total > 0 else 0.0


def line(row: dict[str, Any]) -> str:
    """One row as the line printed every period."""

    def ms(key: str) -> str:
        value = row[key]
        return "-" if value is None else f"{value:.0f}"

    errors = ",".join(f"{k}:{v}" for k, v in sorted(row["errors"].items())) or "-"
    return (
        f"min {row['minute']:6.2f}  offered {row['offered_per_s']:8.0f}/s  "
        f"acked {row['acked_per_s']:8.0f}/s  ack p50/p99 {ms('ack_p50_ms')}/{ms('ack_p99_ms')} ms  "
        f"offline late p99 {ms('offline_late_p99_ms')} ms  ws p99 {ms('ws_p99_ms')} ms  "
        f"hook p99 {ms('hook_p99_ms')} ms {row['posts_per_min']:.0f} POSTs/min  "
        f"daemon {row['daemon_cpu_pct']}% {row['daemon_rss_mb']:.0f} MB  "
        f"pg {row['pg_cpu_pct']}% {row['pg_mb']:.0f} MB  emitter {row['emitter_cpu_pct']}%  "
        f"machine {row['machine_cpu_pct']}%  db {row['db_mb']:.0f} MB  "
        f"commit {ms('commit_ms')} ms  errors {errors}" + ("  (warm-up)" if row["warmup"] else "")
    )


def rss_growth(rows: Sequence[dict[str, Any]], steady_from: float) -> float | None:
    """Daemon RSS growth in MB per 10 minutes after the first 10 of the steady state (which
    began at minute `steady_from`), least-squares slope; None when the run is too short to
    say."""
    settled = steady_from + RSS_SETTLE / 60
    late = [(r["minute"], r["daemon_rss_mb"]) for r in rows if r["minute"] > settled]
    if len(late) < 3:
        return None
    slope = statistics.linear_regression([m for m, _ in late], [v for _, v in late]).slope
    return slope * 10


def criteria(
    offered: int,
    acked: int,
    lost: int,
    offline_late: Sequence[float],
    ws: Sequence[float],
    hook: Sequence[float],
    rows: Sequence[dict[str, Any]],
    steady_from: float,
) -> list[dict[str, Any]]:
    """The pass table: (criterion, measured, goal, met). `met` None: not measurable in this run.
    The counts and samples are the steady state's; `steady_from` is its first minute. `acked`
    is what was offered less what failed: the acknowledgements of one period's reports arrive in
    part in the next one, which in a short run would skew a share of the counts by period."""
    share = acked / offered if offered else math.nan
    growth = rss_growth(rows, steady_from)
    table = [
        (
            "offered reports acknowledged",
            f"{share:.2%}" if offered else "none offered",
            "≥ 99 %",
            bool(offered) and share >= ACKED_GOAL,  # nothing offered shows nothing
        ),
        _latency("offline lateness p99", p(offline_late, 99), "≤ 1,000 ms", OFFLINE_LATE_GOAL),
        _latency("report → WebSocket p99", p(ws, 99), "< 250 ms", WS_GOAL, strict=True),
        _latency("webhook lateness p99", p(hook, 99), "< 2,000 ms", HOOK_GOAL, strict=True),
        (
            "daemon RSS growth after 10 min",
            "run too short" if growth is None else f"{growth:+.1f} MB / 10 min",
            "< 5 MB / 10 min",
            None if growth is None else growth < RSS_GROWTH_GOAL,
        ),
        ("acknowledged reports lost", str(lost), "0", lost == 0),
    ]
    return [{"criterion": c, "measured": m, "goal": g, "met": ok} for c, m, g, ok in table]


def _latency(
    name: str, value: float | None, goal: str, limit: float, *, strict: bool = False
) -> tuple[str, str, str, bool | None]:
    if value is None:
        return name, "no samples", goal, None
    return name, f"{value:,.0f} ms", goal, value < limit if strict else value <= limit


def exhausted(rows: Sequence[dict[str, Any]], workers: int) -> str | None:
    """Which resource ran out first: the first period in which the daemon's CPU, PostgreSQL's
    CPU, the writer's commit time or the machine's cores crossed its limit (None: none did);
    the warm-up's start-up wave is not the fleet's load, so it does not count. The machine is
    named with who used it: the emitter shares the host, and a daemon below a core may still
    be short of CPU when every core is busy."""
    for row in (r for r in rows if not r["warmup"]):
        if row["daemon_cpu_pct"] >= CPU_SATURATED * workers:
            return f"daemon CPU ({row['daemon_cpu_pct']}% at minute {row['minute']:g})"
        if row["pg_cpu_pct"] >= CPU_SATURATED:
            return f"PostgreSQL CPU ({row['pg_cpu_pct']}% at minute {row['minute']:g})"
        if (row["commit_ms"] or 0) >= COMMIT_SLOW:
            return f"writer commit time ({row['commit_ms']} ms at minute {row['minute']:g})"
        if row["machine_cpu_pct"] >= MACHINE_SATURATED:
            return (
                f"the machine's CPU ({row['machine_cpu_pct']}% of all cores busy at minute "
                f"{row['minute']:g}: daemon {row['daemon_cpu_pct']}%, PostgreSQL "
                f"{row['pg_cpu_pct']}%, emitter {row['emitter_cpu_pct']}% of a core)"
            )
    return None


# The chart: three panels over the run's minutes.
WIDTH: Final = 900
PANEL: Final = 190
MARGIN: Final = 60
COLOURS: Final = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")
PANELS: Final = (
    ("reports/s", (("offered_per_s", "offered"), ("acked_per_s", "acknowledged"))),
    (
        "p99 ms",
        (
            ("ack_p99_ms", "ack"),
            ("offline_late_p99_ms", "offline late"),
            ("ws_p99_ms", "report → WS"),
            ("hook_p99_ms", "webhook late"),
        ),
    ),
    (
        "MB / CPU %",
        (
            ("daemon_rss_mb", "daemon RSS MB"),
            ("daemon_cpu_pct", "daemon CPU %"),
            ("pg_cpu_pct", "PostgreSQL CPU %"),
            ("emitter_cpu_pct", "emitter CPU %"),
        ),
    ),
)


def svg(rows: Sequence[dict[str, Any]], title: str, steady_from: float) -> str:
    """The run as an SVG document: one panel per group of series, minutes along x, the warm-up
    (up to minute `steady_from`) shaded."""
    height = MARGIN + len(PANELS) * (PANEL + MARGIN)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text x="{MARGIN}" y="24" font-size="15">{_escape(title)}</text>',
    ]
    minutes = [r["minute"] for r in rows] or [0.0]
    x_max = max(minutes) or 1.0
    plot_w = WIDTH - 2 * MARGIN
    for n, (unit, series) in enumerate(PANELS):
        top = MARGIN + n * (PANEL + MARGIN)
        values = [r[k] for r in rows for k, _ in series if r[k] is not None]
        y_max = max(values, default=1.0) * 1.1 or 1.0
        if steady_from > 0:
            shade = min(steady_from / x_max, 1.0) * plot_w
            out.append(
                f'<rect x="{MARGIN}" y="{top}" width="{shade:.1f}" height="{PANEL}" '
                'fill="#eee"/>'
                f'<text x="{MARGIN + 4}" y="{top + 14}" fill="#888">warm-up</text>'
            )
        out.append(
            f'<rect x="{MARGIN}" y="{top}" width="{plot_w}" height="{PANEL}" fill="none" '
            'stroke="#999"/>'
        )
        out.append(f'<text x="4" y="{top + 12}">{_escape(unit)}</text>')
        for tick in range(5):
            value = y_max * tick / 4
            y = top + PANEL - PANEL * tick / 4
            out.append(f'<text x="4" y="{y + 4:.1f}" fill="#666">{value:,.0f}</text>')
        for k, (key, label) in enumerate(series):
            points = [
                f"{MARGIN + r['minute'] / x_max * plot_w:.1f},"
                f"{top + PANEL - r[key] / y_max * PANEL:.1f}"
                for r in rows
                if r[key] is not None
            ]
            colour = COLOURS[k % len(COLOURS)]
            if points:
                out.append(
                    f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                    f'points="{" ".join(points)}"/>'
                )
            out.append(
                f'<text x="{MARGIN + 10 + k * 190}" y="{top + PANEL + 18}" fill="{colour}">'
                f"{_escape(label)}</text>"
            )
    out.append(
        f'<text x="{WIDTH / 2:.0f}" y="{height - 8}" text-anchor="middle">minutes '
        f"(0 to {x_max:g})</text>"
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
