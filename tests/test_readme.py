"""README.md's command examples, so they cannot rot: every `uv run …` line of a shell block or a
`$ ` prompt, and every inline `uv run just …` / `uv run droneshield …`, is checked against what
it runs. A `just` recipe must exist, and the flags it passes on must parse with the program the
recipe runs (droneshield's CLI or the emitter's); an example whose output the README shows as a
usage error is run, and must print exactly that line."""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator

import pytest

from droneshield import cli
from emitter import cli as emitter_cli

from .support.processes import ROOT

README = (ROOT / "README.md").read_text()
JUSTFILE = (ROOT / "justfile").read_text()
WORKLOADS = [path.stem for path in (ROOT / "tests" / "bench").glob("bench_*.py")]
PLACEHOLDER = re.compile(r"[A-Z]{2,}|…")  # `just emit MODE`, `--count N`, `…`: not literal


def examples() -> Iterator[tuple[list[str], str | None]]:
    """(argv after `uv run`, the README's next output line for a `$ ` example, else None)."""
    for kind, body in re.findall(r"```(sh|text)\n(.*?)```", README, re.DOTALL):
        lines = body.replace("\\\n", " ").splitlines()  # a command continued with `\`
        for i, line in enumerate(lines):
            if kind == "text" and not line.startswith("$ "):
                continue
            command = line.removeprefix("$ ").split("  #")[0].strip()
            words = shlex.split(command)
            while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
                words.pop(0)  # VAR=value before the command
            if words[:2] != ["uv", "run"]:
                continue  # docker compose (test_compose.py checks the file)
            shown = lines[i + 1] if kind == "text" and i + 1 < len(lines) else None
            yield words[2:], None if shown is None or shown.startswith("…") else shown
    for span in re.findall(r"`uv run ((?:just|droneshield) [^`]*)`", README):
        if not PLACEHOLDER.search(span):
            yield shlex.split(span), None


def recipes() -> dict[str, list[str]]:
    """Each recipe of the justfile taking `*args`: the command its line runs before them."""
    found = {}
    for name, line in re.findall(r"^([a-z-]+) \*args:\n\s+(.*)$", JUSTFILE, re.MULTILINE):
        words = shlex.split(line.lstrip("@"))
        words = words[1:] if words[0] == "exec" else words
        found[name] = words[2:-1]  # after `uv run`, before `{{args}}`
    return found


def _parses(parser: argparse.ArgumentParser, args: list[str]) -> None:
    try:
        parser.parse_args(args)
    except SystemExit as exc:
        if exc.code != 0:  # 0: --help
            raise AssertionError(f"{parser.prog} refuses {args}") from None


def check(argv: list[str]) -> None:
    """Raises AssertionError when `argv` (what follows `uv run`) would not run as written."""
    if argv[0] == "just":
        name, *args = argv[1:] or ["--list"]
        if name.startswith("-"):
            return
        assert re.search(rf"^{re.escape(name)}\b.*:", JUSTFILE, re.MULTILINE), name
        if name not in recipes():
            assert not args, f"just {name} takes no arguments"
            return
        argv = recipes()[name] + args
    if argv[0] == "droneshield":
        _parses(cli.build_parser(), argv[1:])
        if argv[1:2] == ["dev"] and "--" in argv:
            _parses(emitter_cli.build_parser(), ["fleet", *argv[argv.index("--") + 1 :]])
    elif argv[:3] == ["python", "-m", "emitter"]:
        _parses(emitter_cli.build_parser(), argv[3:])
    elif argv[:3] == ["python", "-m", "tests.bench"]:
        for name in argv[3:]:
            assert name == "--quick" or any(name in w for w in WORKLOADS), name
    elif argv[0] != "pytest":  # `just test ARGS`: pytest's own
        raise AssertionError(f"no check for {argv}")


ALL = list(examples())


def test_the_readme_has_examples_to_check():
    assert len(ALL) >= 10
    assert any(argv[:3] == ["just", "emit", "compat"] for argv, _ in ALL)


@pytest.mark.parametrize(("argv", "shown"), ALL, ids=[" ".join(a) for a, _ in ALL])
def test_readme_example_runs_as_written(argv, shown):
    if shown is None or " argument " not in shown:
        check(argv)
    else:
        # A usage error the README prints: the real command must print exactly that line.
        done = subprocess.run(
            [sys.executable, "-m", "droneshield", *argv[1:]],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 2
        assert done.stderr.strip() == shown


def test_a_broken_example_would_be_caught():
    with pytest.raises(AssertionError):
        check(["just", "emit", "compat", "--intervals", "1"])
    with pytest.raises(AssertionError):
        check(["just", "nonexistent"])
    with pytest.raises(AssertionError):
        check(["droneshield", "seed", "--http-port", "1"])
