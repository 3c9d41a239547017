"""The domain: what a sensor's state is, and the rules for serials and software versions.

Everything else speaks these words: `db/` returns them, the hub, the presence tracker and the
transports (gRPC, HTTP, WebSocket, the relay) consume them. This module imports nothing of the
package but `errors.py` (the other leaf), so any module may import it and it never drags in a
transport or the database. Pure code, so hypothesis can test it directly.

- Serial: 1 to 128 printable ASCII characters (0x20-0x7e). Sensors are provisioned by seeding
  or import; a report never creates one.
- Version: semver 2.0.0 with an optional leading v, stored canonical (`1.2.3`) and shown with
  a v (`v1.2.3`); a reported one at most 128 characters (`VERSION_MAX`).
- Status: `never` (provisioned, never reported), `online`, `offline` (silent for
  `offline_after` seconds).
- Search: a text anywhere in the serial or the label, ASCII letters in any case (`fold`).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal, NamedTuple, overload

import semver

from .errors import InvalidReport, InvalidVersion

Status = Literal["never", "online", "offline"]
STATUSES: Final[tuple[Status, ...]] = ("never", "online", "offline")
EventKind = Literal["online", "offline", "version", "retired", "restored"]  # recorded transitions

SERIAL_MAX: Final = 128  # characters
# Characters of a reported version. Real ones are under 40; semver sets no bound, but a key of
# `unreleased_version` over PostgreSQL's btree limit (2,704 bytes) fails the statement that
# commits a whole writer batch. 128, as for serials: ample, and far under that limit.
VERSION_MAX: Final = 128
ECHO_MAX: Final = 64  # characters of client input an answer or error repeats, then "…"
_SERIAL: Final = re.compile(rf"[\x20-\x7e]{{1,{SERIAL_MAX}}}")
_ASCII_LOWER: Final = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def fold(text: str) -> str:
    """`text` with its ASCII letters lower-cased, every other character as it is: how a search
    ignores case. Labels may be any printable text, and Unicode's case rules differ between
    Python and a PostgreSQL whose locale is the database's choice (and its `C` locale folds
    ASCII only); ASCII is folded alike by both (`lower(text COLLATE "C")`) and by the
    dashboard, so the API, the live filter and the page agree on every match."""
    return text.lower() if text.isascii() else text.translate(_ASCII_LOWER)


def is_serial(text: str) -> bool:
    """Whether `text` is a serial (`check_serial` without the error)."""
    return _SERIAL.fullmatch(text) is not None


def check_serial(serial: str) -> str:
    """Raises:
    InvalidReport: empty, longer than 128, or not printable ASCII."""
    if not is_serial(serial):
        raise InvalidReport(
            f"serial {echo(serial)} must be 1 to {SERIAL_MAX} printable ASCII characters"
        )
    return serial


def clip(value: str) -> str:
    """`value` cut to its first ECHO_MAX characters, then "…".

    Saying which value was wrong helps a client; repeating all of it lets anyone make the
    daemon hold and send back megabytes per call (a 3 MB version string in every ack, kept for
    as long as the client leaves its receive window closed). Every message built from client
    input shows it through `echo` (quoted) or `clip`.
    """
    return value if len(value) <= ECHO_MAX else value[:ECHO_MAX] + "…"


def echo(value: str) -> str:
    """`value` quoted as Python's repr does, cut to its first ECHO_MAX characters."""
    if len(value) <= ECHO_MAX:
        return repr(value)
    return repr(value[:ECHO_MAX]) + "…"


def status_of(online: bool, last_seen_at: datetime | None) -> Status:
    """A sensor that never reported has no `last_seen_at`; it is `never`, not `offline`."""
    if last_seen_at is None:
        return "never"
    return "online" if online else "offline"


@dataclass(frozen=True, slots=True)
class Edit:
    """What an operator's write (provisioning, a change of site or label, a retirement) leaves
    a sensor with, carried by the change it publishes. Reports and expiries do not carry it:
    they do not read the label, and a sensor that reports is not retired."""

    label: str | None
    retired: bool = False


Before = tuple[Status, str | None]  # a sensor's status and version before a transition


@dataclass(frozen=True, slots=True)
class SensorState:
    """One sensor as everyone sees it: a page row, a change fanned out to WebSocket clients,
    a change relayed to the other daemons, a sensor the expiry took offline."""

    id: int
    serial: str
    version: str | None  # canonical
    status: Status
    last_seen_at: datetime | None
    status_changed_at: datetime | None
    # Set only on a change fanned out live, never stored: the version the sensor reported when
    # that version was never uploaded (so `version` could not take it), and whether this change
    # only moved `last_seen_at` (a heartbeat: status and version as before).
    reported_version: str | None = None
    heartbeat: bool = False
    site: str | None = None  # where the sensor stands, for live views filtered by site
    edit: Edit | None = None  # set only on a change an operator's write made
    # Set only on a transition a report or an expiry made: the status and version before it,
    # so that a live view can be told of a sensor leaving its filter (`messages._moving`).
    before: Before | None = None

    @property
    def online(self) -> bool:
        return self.status == "online"

    @property
    def retired(self) -> bool:
        return self.edit is not None and self.edit.retired


class Applied(NamedTuple):
    """What one committed report did to its sensor. Distinct from `SensorState`: besides the
    state after the commit it carries the facts of that report (what the sensor was before,
    which version it reported and whether that version is known), from which its ack is
    worded and its metrics counted. A named tuple, not a frozen dataclass: one is built per
    report at ingest rate, and a tuple is built ~10x faster."""

    id: int
    serial: str
    version: str | None
    last_seen_at: datetime
    status_changed_at: datetime
    was_online: bool
    was_never: bool
    old_version: str | None
    reported_version: str | None
    version_known: bool
    site: str | None = None  # carried to live views, which may be filtered by site

    @property
    def heartbeat(self) -> bool:
        """Whether the report moved nothing but `last_seen_at` (status and version as before)."""
        return self.was_online and self.version == self.old_version

    def state(self) -> SensorState:
        """The sensor after the commit: online, whatever it was; with the version it reported
        when that one was never uploaded, and flagged a heartbeat when nothing but
        `last_seen_at` moved."""
        unreleased = None if self.version_known else self.reported_version
        heartbeat = self.heartbeat
        return SensorState(
            self.id,
            self.serial,
            self.version,
            "online",
            self.last_seen_at,
            self.status_changed_at,
            reported_version=unreleased,
            heartbeat=heartbeat,
            site=self.site,
            before=None if heartbeat else (self.status_before, self.old_version),
        )

    @property
    def status_before(self) -> Status:
        """The sensor's status before this report (asked of transitions only: off the
        heartbeats' path)."""
        return "online" if self.was_online else "never" if self.was_never else "offline"


# The official semver 2.0.0 pattern, unanchored so it can be found inside a file name.
_SEMVER: Final = (
    r"(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)"
    r"(?:-(?:(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
    r"(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*)?"
)
# In a file name the version stands alone: not glued to other digits or dots, and not followed
# by a `-`, `+` or `.` the pattern could not take (`v1.2.3-rc.01`, a pre-release with a leading
# zero, or `v1.2.3-alpha..1` is no version, not 1.2.3 with a suffix to ignore).
_IN_NAME: Final = re.compile(rf"(?<![0-9A-Za-z.])[vV]?({_SEMVER})(?![0-9A-Za-z+-]|\.[0-9A-Za-z.])")


def canonical(raw: str) -> str:
    """`v1.2.3` → `1.2.3`.

    Raises:
        InvalidVersion: not semver 2.0.0.
    """
    text = raw[1:] if raw[:1] in ("v", "V") else raw
    try:
        return str(semver.Version.parse(text))
    except (ValueError, TypeError):
        raise InvalidVersion(
            f"{echo(raw)} is not a semantic version (expected e.g. v1.2.3)"
        ) from None


@overload
def display(version: str) -> str: ...
@overload
def display(version: None) -> None: ...
@overload
def display(version: str | None) -> str | None: ...
def display(version: str | None) -> str | None:
    """Canonical → shown form (`1.2.3` → `v1.2.3`); None stays None."""
    return None if version is None else f"v{version}"


def sort_key(version: str) -> semver.Version:
    """Precedence order of canonical versions (semver rules, pre-releases before releases)."""
    return semver.Version.parse(version)


def from_filename(name: str) -> str:
    """The canonical version carried by a release file name: `software_v1.2.3.pdf` → `1.2.3`.

    Exactly one version must appear in the stem.

    Raises:
        InvalidVersion: no version, or more than one.
    """
    stem = name.rsplit("/", 1)[-1].rsplit("\\", 1)[-1]
    if stem.lower().endswith(".pdf"):
        stem = stem[:-4]
    found = _IN_NAME.findall(stem)
    if len(found) != 1:
        what = "no semantic version" if not found else f"{len(found)} versions"
        raise InvalidVersion(f"file name {echo(name)} carries {what}; expected one, e.g. v1.2.3")
    if len(found[0]) > VERSION_MAX:  # a sensor could never report it as stored
        raise InvalidVersion(f"the version in {echo(name)} is longer than {VERSION_MAX} characters")
    return canonical(found[0])
