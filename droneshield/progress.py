"""Progress of long command-line work (`seed`, `migrate`, `sensors import`): a bar on a terminal,
and in every case one summary line at the end (`seeded 1,000,000 sensors in 8.7 s`).

A person at a terminal sees the work move; a log file or CI output gets exactly one line, never
a stream of redraws. The work itself never imports rich: it takes a `Steps` and calls
`advance()`, so the same code runs silently under the daemon or a test.

    with progress.track("seeding", done="seeded", unit="sensor", total=count) as steps:
        created = await seed(conn, count, steps)
        steps.note = f"{created:,} new"
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from . import human


class Steps:
    """What the work reports to: how much there is (`total`, when known) and how much is done.

    Plain counters, safe to call from any task; drawing (if any) happens on rich's own refresh
    thread, so `advance()` costs nothing that matters between database round trips.
    """

    def __init__(self, total: int | None = None) -> None:
        self.done = 0
        self.note = ""  # appended to the summary in parentheses, e.g. "12 new"
        self._total = total
        self._bar: tuple[Progress, TaskID] | None = None

    @property
    def total(self) -> int | None:
        return self._total

    @total.setter
    def total(self, value: int) -> None:
        """Set once the work knows its size (migrations count what is pending under a lock)."""
        self._total = value
        if self._bar:
            bar, task = self._bar
            bar.update(task, total=value)

    def phase(self, description: str) -> None:
        """Say what the work does now, in place of the bar's title: a stage it cannot count (the
        insert and index builds after every row is staged, most of a large import, during which
        the bar would otherwise sit at 100 % saying nothing)."""
        if self._bar:
            bar, task = self._bar
            bar.update(task, description=description)
            bar.refresh()

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar:
            bar, task = self._bar
            bar.update(task, completed=self.done)


def summary(done: str, steps: Steps, unit: str, seconds: float) -> str:
    note = f" ({steps.note})" if steps.note else ""
    return f"{done} {human.count(steps.done, unit)} in {human.duration(seconds)}{note}"


@contextmanager
def track(
    title: str, *, done: str, unit: str, total: int | None = None, stream: TextIO | None = None
) -> Iterator[Steps]:
    """Show progress of the work in the block; print its summary line when it succeeds.

    `title` names the work while it runs (`seeding`), `done` once it is over (`seeded`), `unit`
    what is counted (`sensor`, pluralised as needed). Both go to `stream` (stderr by default:
    stdout stays for what a command outputs). On a terminal a transient bar is drawn while the
    block runs; elsewhere (a pipe, a file, TERM=dumb) only the summary line is written.

    Raises: whatever the block raises; no summary is printed then (the caller says what failed).
    """
    stream = stream if stream is not None else sys.stderr
    console = Console(file=stream, highlight=False, soft_wrap=True)
    steps = Steps(total)
    started = time.perf_counter()
    if console.is_terminal and not console.is_dumb_terminal:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        ) as bar:
            steps._bar = (bar, bar.add_task(title, total=total))
            yield steps
    else:
        yield steps
    print(summary(done, steps, unit, time.perf_counter() - started), file=stream, flush=True)
