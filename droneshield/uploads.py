"""Release uploads: the rules a release file must meet, staging while it streams, and storing
the files of one request all together or not at all.

Each file is written to a temporary file in the staging directory (on the same filesystem as
the storage directory) while its sha256 is computed, so no file is ever held in memory. Only
when every file has passed its checks and the transaction registering them has committed are
they renamed into the storage directory; on any failure the staged files are removed. Stored
files are named after their canonical version (`1.2.3.pdf`), never after the client's file
name, so no name a client sends can point outside the storage directory.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, Literal

import trio

from . import domain, human
from .db import software
from .db.pool import Pool, acquire
from .db.software import Release
from .domain import echo
from .errors import (
    BadRelease,
    Invalid,
    InvalidVersion,
    StorageFull,
    TooLarge,
    Unavailable,
    UnsupportedContent,
)

log = logging.getLogger(__name__)

PDF_MAGIC: Final = b"%PDF-"
FILENAME_MAX: Final = 255  # characters
STAGED_SUFFIX: Final = ".part"
CLEANUP_TIMEOUT: Final = 5.0  # seconds to remove staged files, even when cancelled
# Bytes gathered before one trip to a worker thread hashes and writes them. Per network chunk
# (~64 KiB) the trip cost more than the disk; the request body is buffered by Quart without
# backpressure, so a writer that falls behind the socket grows the daemon's memory.
WRITE_BATCH: Final = 1024 * 1024
_DISK_FULL: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})

Outcome = Literal["created", "unchanged"]


def check_filename(raw: str) -> tuple[str, str]:
    """The base name of a client's file name and the canonical version it carries.

    Directories in the name (`../../x_v1.0.0.pdf`, `C:\\x\\v1.0.0.pdf`) are dropped: only the
    base name is kept, and only as a label.

    Raises:
        BadRelease: empty, too long or unprintable name, or not exactly one version.
        UnsupportedContent: not named `*.pdf`.
    """
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    if not name or len(name) > FILENAME_MAX or not name.isprintable():
        raise BadRelease(
            f"file name {echo(raw)} must be 1 to {FILENAME_MAX} printable characters",
            code="bad_file_name",
        )
    if not name.lower().endswith(".pdf"):
        raise UnsupportedContent(f"{echo(name)} is not a .pdf file", code="not_a_pdf")
    try:
        version = domain.from_filename(name)
    except InvalidVersion as exc:
        raise BadRelease(exc.message, code="bad_version") from None
    return name, version


@contextmanager
def writing_to_disk() -> Iterator[None]:
    """Turn a failing disk into an answer the client can act on, instead of a 500 that says
    nothing: the upload is rejected whole (and cleaned up) while the daemon goes on serving.

    Raises:
        StorageFull: no space left (or a quota or file size limit reached).
        Unavailable: any other storage error (a read-only or failing filesystem).
    """
    try:
        yield
    except OSError as exc:
        log.error("release storage failed: %r", exc)
        if exc.errno in _DISK_FULL:
            raise StorageFull(
                "no space left to store release files; retry later", code="insufficient_storage"
            ) from None
        reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
        raise Unavailable(
            f"release files cannot be written ({reason})", code="storage_unavailable"
        ) from None


def stored_name(version: str) -> str:
    """The file name a release has in the storage directory."""
    return f"{version}.pdf"


@dataclass(frozen=True, slots=True)
class Stored:
    release: Release
    outcome: Outcome


class StagedFile:
    """One release file arriving: written to a temporary file and hashed as it streams, a
    `WRITE_BATCH` at a time in a worker thread (the file is a plain one: only that thread
    touches it while a batch is in flight)."""

    def __init__(self, name: str, version: str, path: Path, file: BinaryIO, max_bytes: int) -> None:
        self.name = name
        self.version = version
        self.path = path
        self._file = file
        self._max_bytes = max_bytes
        self._sha = hashlib.sha256()
        self._head = b""
        self._pending = bytearray()
        self.size = 0
        self.release: Release | None = None  # set by `finish`

    async def write(self, data: bytes) -> None:
        """Raises:
        TooLarge: the file grew past the size limit (nothing beyond it is written).
        UnsupportedContent: the content does not start with `%PDF-`.
        """
        if self.size + len(data) > self._max_bytes:
            raise TooLarge(
                f"{echo(self.name)} exceeds {human.size(self._max_bytes)}", code="file_too_large"
            )
        if len(self._head) < len(PDF_MAGIC):
            self._head += data[: len(PDF_MAGIC) - len(self._head)]
            if not PDF_MAGIC.startswith(self._head):
                raise self._not_a_pdf()
        self.size += len(data)
        self._pending += data
        if len(self._pending) >= WRITE_BATCH:
            await self._write_pending()

    async def _write_pending(self) -> None:
        batch, self._pending = self._pending, bytearray()
        with writing_to_disk():
            await trio.to_thread.run_sync(self._hash_and_write, batch)

    def _hash_and_write(self, batch: bytearray) -> None:
        self._sha.update(batch)  # releases the GIL for large buffers, as the write does
        self._file.write(batch)

    async def finish(self) -> Release:
        """The whole file arrived: check it, make it durable, close it.

        Raises:
            UnsupportedContent: shorter than the PDF magic.
        """
        if self._head != PDF_MAGIC:
            raise self._not_a_pdf()
        await self._write_pending()
        with writing_to_disk():
            await trio.to_thread.run_sync(self._make_durable)
        self.release = Release(
            self.version, self.name, stored_name(self.version), self.size, self._sha.hexdigest()
        )
        return self.release

    def _make_durable(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    async def aclose(self) -> None:
        """Close, dropping what could not be flushed: the file is being discarded anyway."""
        try:
            await trio.to_thread.run_sync(self._file.close)
        except OSError as exc:
            log.warning("closing discarded %s failed: %r", self.path, exc)

    def _not_a_pdf(self) -> UnsupportedContent:
        return UnsupportedContent(f"{echo(self.name)} does not start with %PDF-", code="not_a_pdf")


class Upload:
    """The files of one request: staged as they arrive, stored together by `store`."""

    def __init__(
        self, staging_dir: Path, storage_dir: Path, *, max_bytes: int, max_files: int
    ) -> None:
        self._staging_dir = staging_dir
        self._storage_dir = storage_dir
        self._max_bytes = max_bytes
        self._max_files = max_files
        self._staged: list[StagedFile] = []
        self._moved: list[Path] = []

    async def begin_file(self, raw_name: str) -> StagedFile:
        """Raises:
        Invalid: too many files.
        BadRelease, UnsupportedContent: a bad file name (see `check_filename`).
        """
        if len(self._staged) >= self._max_files:
            raise Invalid(f"at most {self._max_files} files per upload", code="too_many_files")
        name, version = check_filename(raw_name)
        path = self._staging_dir / f"{uuid.uuid4().hex}{STAGED_SUFFIX}"
        with writing_to_disk():
            file = await trio.to_thread.run_sync(open, path, "xb")
        staged = StagedFile(name, version, path, file, self._max_bytes)
        self._staged.append(staged)
        return staged

    async def store(self, pool: Pool, expected_sha256: Sequence[str] = ()) -> list[Stored]:
        """Register every finished file in one transaction, then rename them into place.

        `expected_sha256`, when given, holds one hex digest per file, in order.

        Cancellation: once the transaction starts, storing is shielded and finishes (the
        statements are bounded by the pool's command timeout, the renames are local).

        Raises:
            Invalid: no files.
            BadRelease: digests that do not match.
            Conflict: a version already stored with other content.
            StorageFull, Unavailable: storage failing (see `writing_to_disk`).
            DatabaseUnavailable: no connection could be had.
            Nothing is stored then.
        """
        releases = [s.release for s in self._staged if s.release is not None]
        if not releases:
            raise Invalid("send one or more files as `file` or `files`", code="no_files")
        _check_digests(releases, expected_sha256)
        # The files are put in place inside the transaction that registers them, which
        # holds their rows locked: a removal of one of these versions (`software.remove`)
        # waits, so an upload and a removal never leave a row without its file or a file
        # without its row; and no announcement of a release commits before its file is there.
        # Shielded: a request cancelled (client gone, shutdown) in between would leave files
        # of rows rolled back.
        created: list[bool] = []
        with trio.CancelScope(shield=True):
            try:
                async with acquire(pool) as conn, conn.transaction():
                    created = await software.register(conn, releases)
                    try:
                        with writing_to_disk():
                            await self._put_in_place()
                    except BaseException:
                        # While the rows are still locked: once rolled back, another upload of
                        # a version could put its file in place, and this would remove it.
                        await self._unlink_created(releases, created)
                        raise
            except BaseException:
                # The commit failed with the files in place (rare: the connection lost then).
                await self._unlink_created(releases, created)
                raise
        return [
            Stored(r, "created" if new else "unchanged")
            for r, new in zip(releases, created, strict=True)
        ]

    async def _put_in_place(self) -> None:
        for s in self._staged:
            target = self._storage_dir / stored_name(s.version)
            # Same version, same content: replacing an existing file is harmless, and heals one
            # lost outside the daemon.
            await trio.Path(s.path).replace(target)
            self._moved.append(target)
        await trio.to_thread.run_sync(_fsync_dir, self._storage_dir)

    async def _unlink_created(self, releases: Sequence[Release], created: Sequence[bool]) -> None:
        """Remove the files put in place for versions this upload created (`created`, per
        release, once registered), when their rows are not committed; those of versions
        already stored stay: same content. Each only once."""
        news = zip(releases, created, strict=True) if created else ()
        names = {stored_name(r.version) for r, new in news if new}
        for path in self._moved:
            if path.name in names:
                await trio.Path(path).unlink(missing_ok=True)
        self._moved = [path for path in self._moved if path.name not in names]

    async def discard(self) -> None:
        """Close and remove whatever is still staged (nothing once `store` succeeded)."""
        for s in self._staged:
            # Unlinked first: a close that fails (a full disk on flush) still leaves no file.
            try:
                await trio.Path(s.path).unlink(missing_ok=True)
            except OSError as exc:  # the next start's `prepare_dirs` removes it
                log.warning("could not remove %s: %r", s.path, exc)
            await s.aclose()


def _check_digests(releases: Sequence[Release], expected: Sequence[str]) -> None:
    if not expected:
        return
    if len(expected) != len(releases):
        raise BadRelease(
            f"{len(expected)} sha256 fields for {len(releases)} files; send one per file",
            code="checksum_mismatch",
        )
    for r, digest in zip(releases, expected, strict=True):
        if digest.strip().lower() != r.sha256:
            raise BadRelease(
                f"{echo(r.filename)} has sha256 {r.sha256}, not {echo(digest)}",
                code="checksum_mismatch",
            )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@asynccontextmanager
async def open_upload(
    staging_dir: Path, storage_dir: Path, *, max_bytes: int, max_files: int
) -> AsyncIterator[Upload]:
    """An upload whose staged files are removed when the block exits, whatever happens.

    Cancellation: the clean-up is shielded and bounded by CLEANUP_TIMEOUT, so a cancelled or
    failed request leaves no temporary file behind.
    """
    upload = Upload(staging_dir, storage_dir, max_bytes=max_bytes, max_files=max_files)
    try:
        yield upload
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT):
            await upload.discard()


async def prepare_dirs(staging_dir: Path, storage_dir: Path) -> None:
    """Create both directories and remove staged files a previous process left (it died in
    the middle of an upload). The staging directory belongs to this daemon alone."""
    await trio.Path(storage_dir).mkdir(parents=True, exist_ok=True)
    await trio.Path(staging_dir).mkdir(parents=True, exist_ok=True)
    for path in await trio.Path(staging_dir).glob(f"*{STAGED_SUFFIX}"):
        log.warning("removing %s, left by an interrupted upload", path)
        await path.unlink(missing_ok=True)
