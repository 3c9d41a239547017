"""`GET /software` (the release catalogue), `GET /software/{version}` and its `/file`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import PurePath
from typing import Final
from urllib.parse import quote

import trio
from pydantic import Field
from quart import Blueprint, Response, request, send_file
from quart_schema import validate_response
from quart_trio.wrappers.response import TrioFileBody
from werkzeug.exceptions import RequestedRangeNotSatisfiable

from ..db import sensors as sensors_db
from ..db import software as db
from ..db.pool import acquire
from ..db.software import Release
from ..domain import canonical, display, sort_key
from ..errors import NotFound
from ..uploads import writing_to_disk
from .auth import requires_key
from .context import pool, settings
from .ranges import Unsatisfiable, byte_range
from .schema import ApiModel, Binary, NoContent, errors, responds

blueprint = Blueprint("software", __name__)

READ_CHUNK: Final = 256 * 1024  # bytes per read when streaming a release file


class SoftwareItem(ApiModel):
    version: str = Field(description="shown as `v1.2.3`")
    filename: str = Field(description="the name it was uploaded under")
    size_bytes: int
    sha256: str
    uploaded_at: datetime
    sensors: int = Field(description="sensors whose stored version this is")
    online: int = Field(description="of those, online now")
    file_url: str


class SoftwareList(ApiModel):
    """Every uploaded release, newest version first (semver precedence)."""

    items: list[SoftwareItem]


class UnreleasedItem(ApiModel):
    version: str = Field(description="shown as `v1.2.3`")
    reports: int = Field(description="reports that carried it (every heartbeat counts)")
    first_seen_at: datetime
    last_seen_at: datetime

    @classmethod
    def of(cls, u: db.Unreleased) -> UnreleasedItem:
        return cls(
            version=display(u.version),
            reports=u.reports,
            first_seen_at=u.first_seen_at,
            last_seen_at=u.last_seen_at,
        )


class UnreleasedList(ApiModel):
    """Versions sensors report that were never uploaded (so no sensor stores them), most
    recently reported first. An aggregate per version: which sensors run one is not kept."""

    items: list[UnreleasedItem]


class PdfFile(Binary):
    """The release file, streamed. `ETag` is its sha256; byte ranges are supported."""

    media_type = "application/pdf"


class NotModified(Binary):
    """`If-None-Match` matched the file's ETag."""

    media_type = None


def _usage(counts: Sequence[sensors_db.FleetCount]) -> tuple[Counter[str], Counter[str]]:
    """Sensors per stored version, and of those the online ones."""
    sensors: Counter[str] = Counter()
    online: Counter[str] = Counter()
    for c in counts:
        if c.version is not None:
            sensors[c.version] += c.n
            online[c.version] += c.n if c.status == "online" else 0
    return sensors, online


def _item(release: Release, usage: tuple[Counter[str], Counter[str]]) -> SoftwareItem:
    sensors, online = usage
    assert release.uploaded_at is not None  # set by the database when stored
    shown = display(release.version)
    return SoftwareItem(
        version=shown,
        filename=release.filename,
        size_bytes=release.size_bytes,
        sha256=release.sha256,
        uploaded_at=release.uploaded_at,
        sensors=sensors[release.version],
        online=online[release.version],
        file_url=f"/software/{shown}/file",
    )


async def _release(version: str) -> Release:
    """Raises:
    InvalidVersion: a malformed version.
    NotFound: a version never uploaded.
    """
    wanted = canonical(version)
    async with acquire(pool()) as conn:
        release = await db.get(conn, wanted)
    if release is None:
        raise NotFound(f"v{wanted} was never uploaded", code="software_not_found")
    return release


def content_disposition(filename: str) -> str:
    """`attachment` with an ASCII fallback name and the exact name as RFC 6266's filename*
    (header values must be latin-1, and quart's send_file does not encode names)."""
    fallback = filename.encode("ascii", "replace").decode().replace('"', "_").replace("\\", "_")
    value = f'attachment; filename="{fallback}"'
    if fallback != filename:
        value += f"; filename*=UTF-8''{quote(filename)}"
    return value


@blueprint.get("/software")
@validate_response(SoftwareList)
@errors()
async def list_software() -> SoftwareList:
    """The release catalogue with how many sensors run each version."""
    async with acquire(pool()) as conn:
        releases = await db.list_all(conn)
        counts = await sensors_db.fleet_counts(conn)
    releases.sort(key=lambda r: sort_key(r.version), reverse=True)
    usage = _usage(counts)
    return SoftwareList(items=[_item(r, usage) for r in releases])


@blueprint.get("/software/unreleased")
@validate_response(UnreleasedList)
@errors()
async def list_unreleased() -> UnreleasedList:
    """Versions reported by sensors and never uploaded, with how often and since when."""
    async with acquire(pool()) as conn:
        found = await db.unreleased(conn)
    return UnreleasedList(items=[UnreleasedItem.of(u) for u in found])


@blueprint.delete("/software/<version:version>")
@requires_key
@responds(204, NoContent)
@errors(400, 401, 404, 409, 503)
async def delete_software(version: str) -> tuple[str, int]:
    """Remove a release no sensor runs (its file and its row, together): 204. One that
    sensors run (retired ones included) is refused with 409 `release_in_use` and their number
    (`sensors`); 503 `storage_unavailable` when its file cannot be removed (both kept)."""

    async def remove_file(path: str) -> None:
        stored = PurePath(path)
        if stored.name == path:  # never follow a path out of the upload directory
            with writing_to_disk():  # a storage that cannot be written: 503, the row kept
                await trio.Path(settings().upload_dir / stored.name).unlink(missing_ok=True)

    # Shielded: a client gone between the file's removal and the commit would keep the row.
    with trio.CancelScope(shield=True):
        async with acquire(pool()) as conn:
            await db.remove(conn, canonical(version), remove_file)
    return "", 204


@blueprint.get("/software/<version:version>")
@validate_response(SoftwareItem)
@errors(400, 404)
async def get_software(version: str) -> SoftwareItem:
    """One release's metadata."""
    release = await _release(version)
    async with acquire(pool()) as conn:
        counts = await sensors_db.fleet_counts(conn)
    return _item(release, _usage(counts))


@blueprint.get("/software/<version:version>/file")
@responds(200, PdfFile)
@responds(206, PdfFile)
@responds(304, NotModified)
@errors(400, 404, 416)
async def get_software_file(version: str) -> Response:
    """Download a release file (streamed; `ETag` is its sha256; `Range` supported)."""
    release = await _release(version)
    # Stored names are plain file names in upload_dir (`uploads.stored_name`); a catalogue row
    # that says otherwise was not written by the daemon and is never followed out of it.
    stored = PurePath(release.path)
    path = settings().upload_dir / stored.name
    if stored.name != release.path or not await trio.Path(path).is_file():
        raise NotFound(f"the file of v{release.version} is missing", code="file_missing")
    response = await send_file(path, mimetype=PdfFile.media_type, add_etags=False)
    if isinstance(response.response, TrioFileBody):
        response.response.buffer_size = READ_CHUNK
    response.headers["Content-Disposition"] = content_disposition(release.filename)
    response.set_etag(release.sha256)
    response = await response.make_conditional(request)  # 304 and 412; ranges are ours
    if response.status_code == 200 and isinstance(response.response, TrioFileBody):
        await _apply_range(response, response.response, release.sha256)
    return response


async def _apply_range(response: Response, body: TrioFileBody, etag: str) -> None:
    """Make `response` (the whole file, `body`) the part the request's `Range` asks for.

    Raises:
        RequestedRangeNotSatisfiable: 416 when the range selects no byte of the file.
    """
    response.headers["Accept-Ranges"] = "bytes"
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range != f'"{etag}"':
        return  # the client's copy is another version: it gets the whole file
    try:
        wanted = byte_range(request.headers.get("Range"), body.size)
    except Unsatisfiable:
        raise RequestedRangeNotSatisfiable(body.size) from None
    if wanted is None:
        return
    await body.make_conditional(wanted.start, wanted.stop)
    response.status_code = 206
    response.content_length = wanted.length
    response.headers["Content-Range"] = wanted.content_range(body.size)
