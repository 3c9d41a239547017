"""The `software` table: uploaded releases, one per canonical version, immutable once stored.

Inserting a row fires `pg_notify('droneshield_software', version)` (migration 0001), and the
writer's commit statement joins this table, so a release counts for reports on every instance
from the moment its transaction commits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from ..errors import Conflict, InUse, NotFound
from .pool import Connection

_COLUMNS: Final = "version, filename, path, size_bytes, sha256, uploaded_at"

# The `release.uploaded` webhook events (db/webhooks.py) are written by the same statement.
_INSERT: Final = """
WITH stored AS (
    INSERT INTO software (version, filename, path, size_bytes, sha256)
    VALUES ($1, $2, $3, $4, $5) ON CONFLICT (version) DO NOTHING
    RETURNING version, filename, size_bytes, sha256, uploaded_at
), outbox AS (
    INSERT INTO outbox (webhook_id, type, occurred_at, body)
    SELECT w.id, 'release.uploaded', s.uploaded_at,
           jsonb_build_object('release', jsonb_build_object(
               'version', 'v' || s.version, 'filename', s.filename,
               'sizeBytes', s.size_bytes, 'sha256', s.sha256, 'uploadedAt', s.uploaded_at,
               'fileUrl', '/software/v' || s.version || '/file'))
    FROM stored s JOIN webhook w ON 'release.uploaded' = ANY (w.events)
)
SELECT true FROM stored
"""


@dataclass(frozen=True, slots=True)
class Release:
    version: str  # canonical
    filename: str  # as uploaded (base name only)
    path: str  # relative to the storage directory
    size_bytes: int
    sha256: str  # lowercase hex
    uploaded_at: datetime | None = None  # None until stored


async def list_all(conn: Connection) -> list[Release]:
    return [Release(**dict(r)) for r in await conn.fetch(f"SELECT {_COLUMNS} FROM software")]


async def get(conn: Connection, version: str) -> Release | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM software WHERE version = $1", version)
    return None if row is None else Release(**dict(row))


async def register(conn: Connection, releases: Sequence[Release]) -> list[bool]:
    """Store every release, all or none (a savepoint in the caller's transaction, whose
    commit makes them visible; their rows stay locked until then); per release, True if it
    was created and False if the same version with the same content was already stored.

    Versions are inserted in sorted order so that concurrent uploads lock them in the same
    order. A concurrent upload of the same version waits for the other's transaction, then
    sees its row.

    Raises:
        Conflict: a version is already stored, or given twice, with other content;
            nothing of this call is stored.
    """
    unique: dict[str, Release] = {}
    for r in releases:
        if unique.setdefault(r.version, r).sha256 != r.sha256:
            raise Conflict(
                f"v{r.version} is given twice with different content", code="version_conflict"
            )
    created: dict[str, bool] = {}
    async with conn.transaction():
        for version in sorted(unique):
            created[version] = await _register_one(conn, unique[version])
    return [created[r.version] for r in releases]


async def _register_one(conn: Connection, r: Release) -> bool:
    """Insert `r` (True), or find it stored with the same content (False), its row locked
    either way until the caller's transaction ends: a removal (`remove`) waits for the upload
    to put the file in place and commit.

    Raises:
        Conflict: stored with other content.
    """
    while True:
        if await conn.fetchval(_INSERT, r.version, r.filename, r.path, r.size_bytes, r.sha256):
            return True
        stored = await conn.fetchval(
            "SELECT sha256 FROM software WHERE version = $1 FOR SHARE", r.version
        )
        if stored is None:
            continue  # removed since the insert found it: insert it again
        if stored != r.sha256:
            raise Conflict(
                f"v{r.version} is already stored with other content (sha256 {stored})",
                code="version_conflict",
            )
        return False


@dataclass(frozen=True, slots=True)
class Unreleased:
    """A version sensors reported that was never uploaded: an aggregate, not per sensor."""

    version: str  # canonical
    reports: int
    first_seen_at: datetime
    last_seen_at: datetime


# Unreleased versions shown (the API, /summary and its frame to every live view, two metric
# series each): the most recently reported. Sensors choose what they report, so a broken or
# hostile one could report thousands of versions, and every listing of them grew with it.
UNRELEASED_SHOWN: Final = 100


async def unreleased(conn: Connection) -> list[Unreleased]:
    """Versions reported and never uploaded, the UNRELEASED_SHOWN most recently reported,
    latest first."""
    rows = await conn.fetch(
        "SELECT version, reports, first_seen_at, last_seen_at FROM unreleased_version "
        "ORDER BY last_seen_at DESC, version LIMIT $1",
        UNRELEASED_SHOWN,
    )
    return [Unreleased(*r) for r in rows]


async def remove(
    conn: Connection, version: str, remove_file: Callable[[str], Awaitable[None]]
) -> None:
    """Delete the release of `version` if no sensor's stored version is it, and its file
    (`remove_file(path)`, before the commit: a file that cannot be removed keeps the row).

    The release row is locked first: the batch statement's foreign-key check takes a share
    lock on it when it stores that version, so no report can store it between the check and
    the delete; an upload of the version locks it too (`register`) until its file is in
    place, so the two never leave a row without its file or a file without its row.

    Raises:
        NotFound: no such release.
        InUse: sensors (retired ones included) run it; says how many.
        Whatever `remove_file` raises; nothing is removed then.
    """
    async with conn.transaction():
        path = await conn.fetchval(
            "SELECT path FROM software WHERE version = $1 FOR UPDATE", version
        )
        if path is None:
            raise NotFound(f"v{version} was never uploaded", code="software_not_found")
        counts = await conn.fetchrow(
            "SELECT count(*) AS running, count(*) FILTER (WHERE retired_at IS NOT NULL) AS retired "
            "FROM sensor WHERE version = $1",
            version,
        )
        assert counts is not None  # an aggregate has a row
        running, retired = counts["running"], counts["retired"]
        if running:
            # The catalogue counts sensors in service only: say why it says none.
            among = f" ({retired:,} of them retired)" if retired else ""
            raise InUse(
                f"v{version} is the stored version of {running:,} "
                f"{'sensor' if running == 1 else 'sensors'}{among}; it can be removed once "
                "none runs it",
                code="release_in_use",
                details={"sensors": running, "retired": retired},
            )
        await conn.execute("DELETE FROM software WHERE version = $1", version)
        await remove_file(path)
