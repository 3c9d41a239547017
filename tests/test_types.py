"""The type checker is part of the suite, so CI runs it: mypy, strict on droneshield/ (the
settings are in pyproject.toml; `just lint` runs the same)."""

from __future__ import annotations

import subprocess
import sys

import trio

from .support.processes import ROOT


async def test_the_package_type_checks_strictly():
    with trio.fail_after(300):  # a cold cache on a busy machine; ~2 s once .mypy_cache is warm
        done = await trio.run_process(
            [sys.executable, "-m", "mypy"],
            cwd=ROOT,
            capture_stdout=True,
            stderr=subprocess.STDOUT,
            check=False,
        )
    output = done.stdout.decode()
    assert done.returncode == 0, output
    assert "Success: no issues found" in output
