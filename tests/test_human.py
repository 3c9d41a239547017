"""Numbers as people read them."""

from __future__ import annotations

import pytest

from droneshield import human


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 bytes"),
        (1, "1 byte"),
        (1023, "1,023 bytes"),
        (64 * 1024, "64 KiB"),
        (100 * 1024 * 1024, "100 MiB"),
        (3_356_491_776, "3.1 GiB"),
        (2**60, "1,024 PiB"),
    ],
)
def test_sizes_are_in_binary_units(n: int, text: str) -> None:
    assert human.size(n) == text
