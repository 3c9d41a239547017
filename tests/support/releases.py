"""Test helpers for release uploads: PDF-looking content and multipart request bodies."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import httpx

PDF_HEADER = b"%PDF-1.7\n"
BOUNDARY = "droneshield-test-boundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
CLOSING = f"--{BOUNDARY}--\r\n".encode()


def pdf(size: int = 1000, *, seed: int = 0) -> bytes:
    """`size` bytes that start like a PDF; different seeds give different content."""
    body = hashlib.sha256(str(seed).encode()).hexdigest().encode()
    filler = (body * (size // len(body) + 1))[: max(size - len(PDF_HEADER), 0)]
    return PDF_HEADER + filler


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def part_head(filename: bytes | None, field: bytes = b"files") -> bytes:
    """The framing before one part's content. Names go out exactly as given: httpx would
    percent-encode them, hiding what a raw client can send."""
    disposition = b'form-data; name="' + field + b'"'
    if filename is not None:
        disposition += b'; filename="' + filename + b'"'
    return f"--{BOUNDARY}\r\n".encode() + b"Content-Disposition: " + disposition + b"\r\n\r\n"


def multipart(
    files: Sequence[tuple[bytes, bytes]],
    *,
    field: bytes = b"files",
    fields: Sequence[tuple[bytes, bytes]] = (),
) -> bytes:
    """A whole multipart/form-data body, as bytes: a request the server answers early then
    leaves no half-sent body generator behind in the client."""
    parts = [part_head(name, field) + content for name, content in files]
    parts += [part_head(None, name) + value for name, value in fields]
    return b"".join(p + b"\r\n" for p in parts) + CLOSING


async def upload(
    api: httpx.AsyncClient,
    files: Sequence[tuple[str | bytes, bytes]],
    *,
    field: str = "files",
    digests: Sequence[str] = (),
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    body = multipart(
        [(n.encode() if isinstance(n, str) else n, c) for n, c in files],
        field=field.encode(),
        fields=[(b"sha256", d.encode()) for d in digests],
    )
    headers = {"Content-Type": MULTIPART, **(headers or {})}
    return await api.post("/upload", content=body, headers=headers)


async def add_software(db, *versions: str) -> None:  # type: ignore[no-untyped-def]
    """Register releases straight in the database (no file), for tests about sensors."""
    await db.execute(
        "INSERT INTO software (version, filename, path, size_bytes, sha256) "
        "SELECT v, v || '.pdf', v || '.pdf', 1, repeat('0', 64) FROM unnest($1::text[]) AS v",
        list(versions),
    )


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())
