"""Run every benchmark module (`python -m tests.bench [name ...]`)."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import tests.bench as package


def main(argv: list[str]) -> None:
    names = sorted(
        m.name for m in pkgutil.iter_modules(package.__path__) if m.name.startswith("bench_")
    )
    for name in names:
        if argv and not any(a in name for a in argv):
            continue
        importlib.import_module(f"tests.bench.{name}").main()


main(sys.argv[1:])
