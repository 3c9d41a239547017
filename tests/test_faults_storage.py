"""Upload storage faults on a real filesystem: a small tmpfs as the data directory, filled up or
remounted read-only under the running daemon. (We run as root, so permissions would not stop a
write; a mount does.) The upload fails with a clear error, nothing is half-stored, the daemon
keeps serving, and once the fault is cleared the same upload succeeds."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from .support.releases import files_under, pdf, upload

DISK_KIB = 256
RELEASE = "software_v1.0.0.pdf"


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A tmpfs of DISK_KIB KiB of its own; skips the test where mounting is not allowed."""
    with tempfile.TemporaryDirectory(prefix="droneshield-disk-") as tmp:
        mounted = _mount("-t", "tmpfs", "-o", f"size={DISK_KIB}k", "tmpfs", tmp)
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
        try:
            yield Path(tmp)
        finally:
            subprocess.run(["umount", "--lazy", tmp], check=True)


async def _remount(disk: Path, options: str) -> None:
    await trio.run_process(["mount", "-o", f"remount,{options}", str(disk)])


async def _nothing_stored(api, db, disk: Path) -> None:  # type: ignore[no-untyped-def]
    assert files_under(disk) == []  # neither a stored file nor a staged one
    assert await db.fetchval("SELECT count(*) FROM software") == 0
    listed = await api.get("/software")  # and the daemon still answers
    assert listed.status_code == 200


async def test_a_full_disk_answers_507_stores_nothing_and_the_upload_works_once_there_is_room(
    small_disk, api_with, settings, db
):
    api = await api_with(settings.replace(data_dir=small_disk))
    content = pdf(4 * DISK_KIB * 1024)
    with trio.fail_after(30):
        full = await upload(api, [(RELEASE, content)])
        await _nothing_stored(api, db, small_disk)
        await _remount(small_disk, f"size={8 * DISK_KIB}k")
        stored = await upload(api, [(RELEASE, content)])
    assert full.status_code == 507
    assert full.json()["error"] == {
        "code": "insufficient_storage",
        "message": "no space left to store release files; retry later",
    }
    assert stored.status_code == 201
    assert files_under(small_disk) == [small_disk / "software" / "1.0.0.pdf"]


async def test_a_read_only_disk_answers_503_stores_nothing_and_the_upload_works_once_writable(
    small_disk, api_with, settings, db
):
    api = await api_with(settings.replace(data_dir=small_disk))
    with trio.fail_after(30):
        await _remount(small_disk, "ro")
        refused = await upload(api, [(RELEASE, pdf())])
        await _nothing_stored(api, db, small_disk)
        await _remount(small_disk, "rw")
        stored = await upload(api, [(RELEASE, pdf())])
    assert refused.status_code == 503
    assert refused.json()["error"] == {
        "code": "storage_unavailable",
        "message": "release files cannot be written (Read-only file system)",
    }
    assert stored.status_code == 201
    assert files_under(small_disk) == [small_disk / "software" / "1.0.0.pdf"]


async def test_a_release_whose_file_cannot_be_removed_is_kept_whole_and_answered_503(
    small_disk, api_with, settings, db
):
    """The file is removed before the row's deletion commits: a read-only disk keeps both
    (it deleted the row, answered 500 and left the file, which no retry could remove)."""
    api = await api_with(settings.replace(data_dir=small_disk))
    with trio.fail_after(30):
        assert (await upload(api, [(RELEASE, pdf())])).status_code == 201
        await _remount(small_disk, "ro")
        refused = await api.delete("/software/v1.0.0")
        await _remount(small_disk, "rw")
        kept = await api.get("/software/v1.0.0/file")
        removed = await api.delete("/software/v1.0.0")
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "storage_unavailable"
    assert kept.status_code == 200
    assert removed.status_code == 204
    assert files_under(small_disk) == []
    assert await db.fetchval("SELECT count(*) FROM software") == 0
