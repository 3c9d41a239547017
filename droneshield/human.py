"""Numbers as people read them, in messages and summary lines: `1,000,000 sensors`, `8.7 s`,
`3.1 GiB`. Plain functions of their inputs."""

from __future__ import annotations

from typing import Final

SIZE_UNITS: Final = ("KiB", "MiB", "GiB", "TiB", "PiB")


def count(n: int, unit: str) -> str:
    """`1,000,000 sensors`, `1 migration`: the count with thousands separators and its unit."""
    return f"{n:,} {unit}{'' if n == 1 else 's'}"


def duration(seconds: float) -> str:
    """`42 ms` under a second, `8.7 s` above."""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def size(n: int) -> str:
    """`512 bytes`, `100 MiB`, `3.1 GiB`: binary units, one decimal when it is not zero."""
    if n < 1024:
        return count(n, "byte")
    value = float(n)
    for unit in SIZE_UNITS:
        value /= 1024
        if value < 1024 or unit == SIZE_UNITS[-1]:
            return f"{value:,.1f}".removesuffix(".0") + f" {unit}"
    raise AssertionError("unreachable")  # pragma: no cover
