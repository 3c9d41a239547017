"""Small, valid release PDFs for the emitter's versions, and their upload to the daemon.

The PDFs are written by hand (five objects and a cross-reference table, ~600 bytes) because no
PDF library is a dependency and the daemon only checks the `%PDF-` magic; they are
deterministic, so uploading them twice is idempotent on the daemon's side.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import Final

import httpx

from .versions import RELEASED, shown

log = logging.getLogger(__name__)

UPLOAD_TIMEOUT: Final = 30.0  # seconds per request
UPLOAD_FIELD: Final = "files"  # the multipart field POST /upload reads


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def release_pdf(version: str) -> bytes:
    """A one-page PDF 1.4 saying which release it is, with a correct xref table."""
    text = f"droneshield sensor software {shown(version)}"
    content = f"BT /F1 24 Tf 72 760 Td ({_escape(text)}) Tj ET".encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")  # the binary comment marks it binary
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def file_name(version: str) -> str:
    return f"software_{shown(version)}.pdf"


def write(directory: Path, versions: Iterable[str] = RELEASED) -> list[Path]:
    """Write the release PDFs into `directory` (for uploading by hand in the dashboard)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for version in versions:
        path = directory / file_name(version)
        path.write_bytes(release_pdf(version))
        paths.append(path)
    return paths


def upload(
    url: str,
    api_key: str | None,
    versions: Iterable[str] = RELEASED,
    *,
    ca_file: Path | None = None,
) -> bool:
    """POST one release per request to `url`/upload, so one rejected file does not take the
    others with it; an https `url` is verified with `ca_file` (else the system's CAs).
    Returns True when every upload was accepted (or already there)."""
    # A fresh connection per file: a rejection answered before the body was read could leave
    # a kept-alive connection stalled (seen with hypercorn on 404).
    headers = {"Connection": "close"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    ok = True
    verify: ssl.SSLContext | bool = True
    if ca_file is not None:
        verify = ssl.create_default_context(cafile=ca_file)
    with httpx.Client(
        base_url=url, headers=headers, timeout=UPLOAD_TIMEOUT, verify=verify
    ) as client:
        for version in versions:
            name = file_name(version)
            files = {UPLOAD_FIELD: (name, release_pdf(version), "application/pdf")}
            try:
                response = client.post("/upload", files=files)
            except httpx.HTTPError as exc:
                log.error("%s: %r", name, exc)
                ok = False
                continue
            if response.is_success:
                log.info("%s: uploaded (%d)", name, response.status_code)
            else:
                log.error("%s: HTTP %d %s", name, response.status_code, response.text[:300])
                ok = False
    return ok
