"""Workload 7, a large release upload: throughput of `POST /upload` and how far the daemon's
resident memory rises while it streams the file to disk.

A PDF-looking file (the `%PDF-` header, then filler) is written to disk first (not timed), then a
load process uploads it with httpx as multipart/form-data streamed from the file. Timed: the
request, from its first byte to the 201. Memory: the daemon's peak RSS (VmHWM, reset through
/proc/<pid>/clear_refs after a small warm-up upload) minus its RSS just before the upload.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, BinaryIO, Final

import httpx
import trio

from tests.support.releases import CLOSING, MULTIPART, part_head, pdf

from . import load
from .support import Bench, DaemonProcess, Result, print_table, run_client

MiB: Final = 1024 * 1024
SIZE: Final = 1024 * MiB
SIZE_QUICK: Final = 100 * MiB
CHUNK: Final = MiB  # bytes written to the generated file at a time
FILENAME: Final = "software_v9.0.0.pdf"
GOAL_RSS_GROWTH: Final = 20.0  # MiB
UPLOAD_TIMEOUT: Final = 600.0  # seconds, for the client and the daemon's body timeout


async def _write_pdf(path: Path, size: int) -> str:
    """A `size`-byte file that starts like a PDF; returns its sha256."""
    digest = hashlib.sha256()
    chunk = pdf(CHUNK)  # only the first chunk has to start with %PDF-; all of them do
    async with await trio.open_file(path, "wb") as f:
        for _ in range(size // CHUNK):
            await f.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


async def _upload(http_port: int, file: BinaryIO) -> dict[str, Any]:
    """Load process: upload `file`, read chunk by chunk by httpx's multipart encoder."""
    async with httpx.AsyncClient(timeout=UPLOAD_TIMEOUT) as client:
        began = trio.current_time()
        response = await client.post(
            f"http://127.0.0.1:{http_port}/upload",
            files={"files": (FILENAME, file, "application/pdf")},
        )
        seconds = trio.current_time() - began
    if response.status_code != 201:
        raise RuntimeError(f"upload answered {response.status_code}: {response.text}")
    return {"seconds": seconds, **response.json()["files"][0]}


async def _warm_up(daemon: DaemonProcess) -> None:
    """One small upload, so the upload path's first-use costs are not counted as growth."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.http_port}") as client:
        response = await client.post(
            "/upload",
            content=part_head(b"warm_v0.0.1.pdf") + pdf() + b"\r\n" + CLOSING,
            headers={"Content-Type": MULTIPART},
        )
    response.raise_for_status()


async def run(bench: Bench) -> list[Result]:
    size = bench.scaled(SIZE, SIZE_QUICK)
    with TemporaryDirectory(prefix="droneshield-bench-upload-") as tmp:
        path = Path(tmp) / FILENAME
        digest = await _write_pdf(path, size)
        async with (
            bench.database() as url,
            bench.daemon(url, max_upload_bytes=size + MiB, body_timeout=UPLOAD_TIMEOUT) as daemon,
        ):
            await _warm_up(daemon)
            await trio.Path(f"/proc/{daemon.pid}/clear_refs").write_text("5")  # resets VmHWM
            before = daemon.rss_mb()
            stored = await run_client(__name__, daemon.http_port, path)
            peak = daemon.peak_rss_mb()
    if stored["sizeBytes"] != size or stored["sha256"] != digest:
        raise RuntimeError(f"the daemon stored other content: {stored}")
    rate = size / MiB / stored["seconds"]
    growth = peak - before
    print_table(
        "7. upload: one large release file",
        f"one {size // MiB:,} MiB PDF in one multipart POST /upload, streamed by httpx from a "
        "file on disk in a separate process; timed from the request's start to the 201; "
        "RSS growth = the daemon's peak RSS during the upload minus its RSS before",
        ["MiB", "seconds", "MB/s", "RSS before MB", "peak MB", "growth MB"],
        [(size // MiB, stored["seconds"], rate, before, peak, growth)],
    )
    return [
        Result(
            "7. upload, 1 file streamed to disk",
            rate,
            "MB/s",
            rss_mb=peak,
            goal=f"RSS growth < {GOAL_RSS_GROWTH:g} MB (measured {growth:.1f})",
            met=growth < GOAL_RSS_GROWTH,
            note=f"{size // MiB:,} MiB in {stored['seconds']:.1f} s",
        )
    ]


if __name__ == "__main__":
    with Path(sys.argv[2]).open("rb") as file:
        load.main(_upload, int(sys.argv[1]), file)
