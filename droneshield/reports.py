"""What a sensor report is, before and after its commit: validation of the wire values and the
words of its acknowledgement. Pure code shared by the gRPC edge and the writer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from .domain import VERSION_MAX, Applied, canonical, clip, display, echo
from .errors import DroneshieldError, InvalidVersion

SHUTTING_DOWN: Final = "the daemon is shutting down; retry"
TOO_LATE: Final = "not committed before its deadline (daemon overloaded or database slow); retry"
VERSIONS_CACHED: Final = 1024  # distinct raw version strings whose canonical form is kept

Outcome = Applied | DroneshieldError


@dataclass(slots=True)
class Pending:
    """A validated report waiting for its commit. `resolve` is called exactly once, by the
    writer, with the committed row or the error to answer with."""

    serial: str
    version: str | None  # canonical; None when absent or malformed (the version is not stored)
    note: str | None  # why the reported version cannot be stored, known before the commit
    deadline: float  # trio time after which the report is answered UNAVAILABLE
    resolve: Callable[[Outcome], None]


def check_version(raw: str) -> tuple[str | None, str | None]:
    """(canonical version, None) or (None, why it will not be stored). Never raises: a sensor
    with a bad version is still online. A version over VERSION_MAX is refused as a malformed
    one is, before it is parsed or cached (the cache is bounded in entries, so its keys must
    be short for it to be bounded in bytes)."""
    if not raw:
        return None, "no software version reported"
    if len(raw) > VERSION_MAX:
        return None, f"{echo(raw)} is longer than {VERSION_MAX} characters; version not stored"
    try:
        return _canonical(raw), None
    except InvalidVersion as exc:
        return None, f"{exc.message}; version not stored"


@lru_cache(maxsize=VERSIONS_CACHED)
def _canonical(raw: str) -> str:
    # A fleet runs a handful of versions and parsing one costs ~7 µs, a sizeable share of a
    # report's CPU on the batch path. lru_cache keeps results only, so malformed versions are
    # parsed each time; the bound, on keys of at most VERSION_MAX characters, keeps the cache
    # under ~0.5 MB whatever sensors send.
    return canonical(raw)


def _shown(version: str | None) -> str | None:
    """A version as an answer repeats it: in its shown form, clipped (it is what the sensor
    sent, up to VERSION_MAX characters)."""
    return None if version is None else clip(display(version))


def version_problem(version: str | None, note: str | None, applied: Applied) -> str | None:
    """Why this report's version was not stored, or None when it was."""
    if note is not None:
        return note
    if applied.reported_version != version:
        return f"{_shown(version)} superseded by a later report in the same batch"
    if not applied.version_known:
        return f"{_shown(version)} was never uploaded; version not stored"
    return None


def ack_message(version: str | None, note: str | None, applied: Applied) -> str:
    """The sentence a sensor gets back, saying what happened to its version."""
    problem = version_problem(version, note, applied)
    if problem is not None:
        return f"online; {problem}"
    return f"ok: online, running {_shown(applied.version)}"
