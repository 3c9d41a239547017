"""Hypothesis-generated inputs for tests that send them over a real socket."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st


def examples(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """`count` values hypothesis generates (the same ones every run), to send to a running
    daemon one after another: a daemon cannot live inside a hypothesis example, so the
    shrinking happens in the pure tests of the same inputs, not here."""
    drawn: list[Any] = []

    @settings(max_examples=count, database=None, derandomize=True)
    @given(strategy)
    def draw(value: Any) -> None:
        drawn.append(value)

    draw()
    return drawn
