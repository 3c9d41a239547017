"""`POST /upload`: release PDFs as multipart/form-data, streamed to disk, stored all or nothing.

The body is never read whole: chunks go through the streaming multipart parser straight into
staged files (see droneshield/uploads.py for the rules and the storing). Any rejection stops
reading at once and answers with its status; the staged files are removed.
"""

from __future__ import annotations

from typing import Final, Literal

import trio
from pydantic import Field
from quart import Blueprint, request
from quart_schema import DataSource, validate_response

from .. import human, metrics, uploads
from ..config import Settings
from ..domain import display, echo
from ..errors import BadRelease, DroneshieldError, Invalid, TimedOut, TooLarge, UnsupportedContent
from .auth import requires_key
from .context import events_queued, pool, settings
from .errors import AnnouncedTooLarge
from .multipart import MultipartReader, PartData, PartEnd, PartStart
from .schema import ApiModel, errors, reads_body

blueprint = Blueprint("upload", __name__)

FILES_MAX: Final = 32  # files per request
FILE_FIELDS: Final = frozenset({"file", "files"})
DIGEST_FIELD: Final = "sha256"
FIELD_MAX: Final = 1024  # bytes kept of a text field
MULTIPART_SLACK: Final = 1024 * 1024  # bytes of part headers and boundaries beyond the files
DRAIN_MAX_BYTES: Final = 16 * 1024 * 1024  # bytes of a rejected body read and dropped
DRAIN_SECONDS: Final = 5.0  # seconds spent at most dropping a rejected body


def max_request_bytes(s: Settings) -> int:
    """The largest body an upload may have: every file at its limit, plus the framing."""
    return s.max_upload_bytes * FILES_MAX + MULTIPART_SLACK


class UploadForm(ApiModel):
    """Release PDFs named with their version (`software_v1.2.3.pdf`, `v4.2.0-beta.pdf`)."""

    files: list[bytes] = Field([], description="one or more release files")
    file: bytes | None = Field(None, description="a single release file")
    sha256: list[str] = Field(
        [], description="optional: one hex sha256 per file, in order, to have them verified"
    )


class UploadedFile(ApiModel):
    filename: str
    version: str
    size_bytes: int
    sha256: str
    outcome: Literal["created", "unchanged"]


class UploadResult(ApiModel):
    """Every file of the request: `created`, or `unchanged` (that content was stored)."""

    files: list[UploadedFile]


class _Form:
    """Routes the parts of the body: files to staged files, `sha256` fields to `digests`,
    other text fields nowhere."""

    def __init__(self, upload: uploads.Upload) -> None:
        self._upload = upload
        self._file: uploads.StagedFile | None = None
        self._field: bytearray | None = None
        self.digests: list[str] = []

    async def on_start(self, part: PartStart) -> None:
        if part.name in FILE_FIELDS:
            if part.filename is None:
                raise BadRelease(f"part {echo(part.name)} has no filename", code="bad_file_name")
            if part.filename:  # a browser's empty file input sends filename=""
                self._file = await self._upload.begin_file(part.filename)
        elif part.filename is not None:
            raise Invalid(
                f"files go in `file` or `files`, not {echo(part.name)}", code="unexpected_field"
            )
        elif part.name == DIGEST_FIELD:
            self._field = bytearray()

    async def on_data(self, data: bytes) -> None:
        if self._file is not None:
            await self._file.write(data)
        elif self._field is not None:
            self._field += data
            if len(self._field) > FIELD_MAX:
                raise Invalid(f"{DIGEST_FIELD} is too long", code="field_too_large")

    async def on_end(self) -> None:
        if self._file is not None:
            await self._file.finish()
        elif self._field is not None:
            self.digests.append(self._field.decode("latin-1"))
        self._file = self._field = None


async def _drain_body() -> None:
    """Read and drop what is left of a rejected body, within bounds. A client still sending
    when we answer early would otherwise see a reset connection instead of our error."""
    dropped = 0
    with trio.move_on_after(DRAIN_SECONDS):
        async for chunk in request.body:
            dropped += len(chunk)
            if dropped > DRAIN_MAX_BYTES:
                break


async def _receive(form: _Form, boundary: str, s: Settings) -> None:
    reader = MultipartReader(boundary, max_parts=s.max_upload_parts)
    limit = max_request_bytes(s)
    received = 0
    async for chunk in request.body:
        received += len(chunk)
        if received > limit:
            raise TooLarge(f"the body exceeds {human.size(limit)}", code="request_too_large")
        for event in reader.feed(chunk):
            if isinstance(event, PartData):
                await form.on_data(event.data)
            elif isinstance(event, PartStart):
                await form.on_start(event)
            elif isinstance(event, PartEnd):
                await form.on_end()
    reader.close()


def _check_announced_length(limit: int) -> None:
    """Raises:
    AnnouncedTooLarge(413): the client says the body is longer than `limit`.
    """
    if (request.content_length or 0) > limit:
        metrics.UPLOADS.labels("request_too_large").inc()
        raise AnnouncedTooLarge(f"the body exceeds {human.size(limit)}")


def _boundary() -> str:
    """Raises:
    UnsupportedContent: not multipart/form-data with a boundary.
    """
    boundary = request.mimetype_params.get("boundary")
    if request.mimetype != "multipart/form-data" or not boundary:
        raise UnsupportedContent("send the files as multipart/form-data", code="expected_multipart")
    return boundary


@blueprint.post("/upload")
@requires_key
@validate_response(UploadResult, 201)
@validate_response(UploadResult, 200)
@errors(400, 401, 408, 409, 413, 415, 422, 503, 507)
@reads_body(UploadForm, DataSource.FORM_MULTIPART)
async def upload() -> tuple[UploadResult, int]:
    """Upload one or more release PDFs (all are stored, or none).

    Each file's version comes from its name (exactly one semver, `v` optional); its content
    must start with `%PDF-`. 201 when something new was stored, 200 when every file was
    already stored with the same content.
    """
    s = settings()
    _check_announced_length(max_request_bytes(s))
    try:
        boundary = _boundary()
        async with uploads.open_upload(
            s.staging_dir, s.upload_dir, max_bytes=s.max_upload_bytes, max_files=FILES_MAX
        ) as upload:
            form = _Form(upload)
            with trio.move_on_after(s.body_timeout) as waited:
                await _receive(form, boundary, s)
            if waited.cancelled_caught:
                raise TimedOut(f"the body took longer than {s.body_timeout} s", code="body_timeout")
            stored = await upload.store(pool(), form.digests)
    except DroneshieldError as exc:
        metrics.UPLOADS.labels(exc.code).inc()
        await _drain_body()
        raise
    if any(f.outcome == "created" for f in stored):
        events_queued()  # release.uploaded, for the webhooks that want it
    for f in stored:
        metrics.UPLOADS.labels(f.outcome).inc()
        if f.outcome == "created":
            metrics.UPLOAD_BYTES.inc(f.release.size_bytes)
    result = UploadResult(
        files=[
            UploadedFile(
                filename=f.release.filename,
                version=display(f.release.version),
                size_bytes=f.release.size_bytes,
                sha256=f.release.sha256,
                outcome=f.outcome,
            )
            for f in stored
        ]
    )
    return result, 201 if any(f.outcome == "created" for f in stored) else 200
