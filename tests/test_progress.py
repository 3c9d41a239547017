"""Long command-line work: a bar on a terminal, one summary line everywhere."""

from __future__ import annotations

import io
import os
import select

import pytest

from droneshield import progress


def test_off_a_terminal_only_the_summary_line_is_written() -> None:
    out = io.StringIO()
    with progress.track("seeding", done="seeded", unit="sensor", total=3, stream=out) as steps:
        for _ in range(3):
            steps.advance()
        steps.note = "2 new"
    line, rest = out.getvalue().split("\n", 1)
    assert line.startswith("seeded 3 sensors in ")
    assert line.endswith(" ms (2 new)")
    assert rest == ""


def test_a_failed_block_prints_no_summary() -> None:
    out = io.StringIO()
    with (
        pytest.raises(RuntimeError),
        progress.track("seeding", done="seeded", unit="sensor", stream=out),
    ):
        raise RuntimeError("boom")
    assert out.getvalue() == ""


def test_on_a_terminal_a_bar_is_drawn_then_the_summary() -> None:
    primary, secondary = os.openpty()
    with os.fdopen(secondary, "w") as tty:
        with progress.track("migrating", done="applied", unit="migration", stream=tty) as steps:
            steps.total = 2
            steps.advance(2)
        tty.flush()
        written = b""
        while select.select([primary], [], [], 0)[0]:  # all of it is written already
            written += os.read(primary, 65536)
    os.close(primary)
    assert b"migrating" in written  # the bar, redrawn in place
    assert b"applied 2 migrations in " in written


def test_a_stage_that_cannot_be_counted_is_named_on_the_bar() -> None:
    """After the last row is staged a large import inserts and builds indexes for most of its
    time: the bar says so instead of sitting at 100 %."""
    primary, secondary = os.openpty()
    with os.fdopen(secondary, "w") as tty:
        with progress.track("importing", done="imported", unit="sensor", stream=tty) as steps:
            steps.total = 2
            steps.advance(2)
            steps.phase("storing (insert, then indexes)")
        tty.flush()
        written = b""
        while select.select([primary], [], [], 0)[0]:
            written += os.read(primary, 65536)
    os.close(primary)
    assert b"storing (insert, then indexes)" in written
    assert b"imported 2 sensors in " in written


@pytest.mark.parametrize(
    ("count", "unit", "seconds", "text"),
    [
        (1_000_000, "sensor", 8.74, "1,000,000 sensors in 8.7 s"),
        (1, "migration", 0.042, "1 migration in 42 ms"),
        (0, "migration", 0.0, "0 migrations in 0 ms"),
    ],
)
def test_summary_reads_as_people_write_it(count: int, unit: str, seconds: float, text: str) -> None:
    steps = progress.Steps()
    steps.advance(count)
    assert progress.summary("did", steps, unit, seconds) == f"did {text}"
