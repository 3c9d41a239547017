"""A large upload streams to disk: the daemon's resident memory barely moves.

The daemon runs as its own process (`droneshield serve`, as an operator starts it) so that its
memory can be read from /proc without the test's own allocations in the way.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from functools import partial

import httpx
import trio

from .support.processes import status_kib
from .support.releases import BOUNDARY, CLOSING, MULTIPART, part_head, pdf, sha256

MiB = 1024 * 1024
UPLOAD_BYTES = 50 * MiB
RSS_GROWTH_MAX = 20 * MiB
_READY = re.compile(rb"droneshield ready: gRPC :(\d+), HTTP :(\d+)")


async def _ready_port(stderr: trio.abc.ReceiveStream, log: bytearray) -> int:
    while (found := _READY.search(log)) is None:
        chunk = await stderr.receive_some()
        assert chunk, f"daemon exited before it was ready:\n{log.decode(errors='replace')}"
        log += chunk
    return int(found.group(2))


async def _drain(stderr: trio.abc.ReceiveStream, log: bytearray) -> None:
    # The daemon logs every request; an unread pipe would fill and stall it.
    async for chunk in stderr:
        log += chunk


async def _body(content_chunk: bytes, chunks: int) -> AsyncIterator[bytes]:
    yield part_head(b"big_v9.0.0.pdf")
    for _ in range(chunks):
        yield content_chunk
    yield b"\r\n" + CLOSING


async def test_a_50_mb_upload_keeps_the_daemon_rss_growth_under_20_mb(database_url, tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DRONESHIELD_DATA_DIR": str(tmp_path),
        "DRONESHIELD_HTTP_PORT": "0",
        "DRONESHIELD_GRPC_PORT": "0",
    }
    env.pop("DRONESHIELD_API_KEY", None)
    chunk = pdf(MiB)  # every chunk starts with %PDF-; only the first one has to
    log = bytearray()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            process = await nursery.start(
                partial(
                    trio.run_process,
                    [sys.executable, "-m", "droneshield", "serve"],
                    env=env,
                    stderr=subprocess.PIPE,
                    check=False,
                )
            )
            port = await _ready_port(process.stderr, log)
            nursery.start_soon(_drain, process.stderr, log)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as api:
                # Warm up the upload path, then start measuring from there.
                warm = await api.post(
                    "/upload",
                    content=part_head(b"warm_v0.0.1.pdf") + pdf() + b"\r\n" + CLOSING,
                    headers={"Content-Type": MULTIPART},
                )
                assert warm.status_code == 201, warm.text
                await trio.Path(f"/proc/{process.pid}/clear_refs").write_text("5")  # reset VmHWM
                before = status_kib(process.pid, "VmRSS")
                response = await api.post(
                    "/upload",
                    content=_body(chunk, UPLOAD_BYTES // MiB),
                    headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
                )
                peak = status_kib(process.pid, "VmHWM")
            process.terminate()
            assert await process.wait() == 0, log.decode(errors="replace")[-4000:]
    assert response.status_code == 201, response.text
    stored = response.json()["files"][0]
    assert stored["sizeBytes"] == UPLOAD_BYTES
    assert stored["sha256"] == sha256(chunk * (UPLOAD_BYTES // MiB))
    assert (tmp_path / "software" / "9.0.0.pdf").stat().st_size == UPLOAD_BYTES
    growth = (peak - before) * 1024
    print(f"RSS before {before} KiB, peak during a 50 MiB upload {peak} KiB")
    assert growth < RSS_GROWTH_MAX, f"RSS grew by {growth / MiB:.1f} MiB"
