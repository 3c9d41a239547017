"""Software versions: semver 2.0.0 with an optional leading v, stored canonical (`1.2.3`) and
shown with a v (`v1.2.3`). Pure functions, so hypothesis can test them directly."""

from __future__ import annotations

import re
from typing import Final

import semver

from .echo import echo
from .errors import InvalidVersion

# The official semver 2.0.0 pattern, unanchored so it can be found inside a file name.
_SEMVER: Final = (
    r"(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)"
    r"(?:-(?:(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
    r"(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*)?"
)
# In a file name the version stands alone: not glued to other digits or dots.
_IN_NAME: Final = re.compile(rf"(?<![0-9A-Za-z.])[vV]?({_SEMVER})(?![0-9A-Za-z]|\.[0-9A-Za-z])")


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
    return canonical(found[0])
