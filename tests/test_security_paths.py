"""Downloads only by catalogued version: raw request targets with `..`, encoded dots and
slashes, and static-route tricks (sent byte for byte; an HTTP client library would normalise
them) never reach the data directory, uncatalogued files or anything outside client/."""

from __future__ import annotations

import h11
import pytest
import trio

from droneshield.resources import CLIENT_DIR
from droneshield.web.app import create_app

from .support.releases import pdf, upload

SECRET = b"data-dir-secret-4f1e"
UNCATALOGUED = b"%PDF-1.4 uncatalogued-7c2d"
STAGED = b"%PDF-1.4 staged-0a9b"
OUTSIDE = (b"[project]", b"root:x:0:")  # pyproject.toml beside client/, /etc/passwd


async def _raw_get(port: int, target: str) -> tuple[int, bytes]:
    """GET `target` exactly as written (h11 frames it but leaves the target alone)."""
    client = h11.Connection(h11.CLIENT)
    request = h11.Request(method="GET", target=target, headers=[("Host", "127.0.0.1")])
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(client.send(request) + client.send(h11.EndOfMessage()))
        status, body = 0, b""
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                client.receive_data(await stream.receive_some())
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, body


def _targets(upload_file: str) -> list[str]:
    to_root = "/".join([".."] * len(CLIENT_DIR.parts[1:]))
    via_client = f"{to_root}{upload_file}"
    return [
        "/software/../secret.txt",
        "/software/..%2fsecret.txt",
        "/software/%2e%2e/%2e%2e/secret.txt",
        "/software/%2e%2e%2fsecret.txt/file",
        "/software/..%2f..%2fsecret.txt/file",
        "/software/1.2.3%2f..%2f..%2fsecret.txt/file",
        "/software/1.2.3/file/../../../secret.txt",
        "/software/9.9.9/file",
        "/software/v9.9.9/file",
        "/software/..%2fsoftware%2f9.9.9/file",
        "/software/%00/file",
        "/client/../pyproject.toml",
        "/client/%2e%2e/pyproject.toml",
        "/client/..%2fpyproject.toml",
        "/client/..%5cpyproject.toml",
        "/client/....//....//pyproject.toml",
        "/client//etc/passwd",
        "/client/%2fetc%2fpasswd",
        "/client/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc/passwd",
        f"/client/{via_client}",
        f"/client/{via_client.replace('/', '%2f')}",
        "/static/../secret.txt",
        "/static/%2e%2e/pyproject.toml",
        "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/../../../../etc/passwd",
    ]


async def test_traversal_attempts_reach_nothing_outside_the_catalogue(running, api, settings):
    release = pdf(seed=42)
    with trio.fail_after(30):
        assert (await upload(api, [("v1.2.3.pdf", release)])).status_code == 201
        (settings.data_dir / "secret.txt").write_bytes(SECRET)
        (settings.upload_dir / "9.9.9.pdf").write_bytes(UNCATALOGUED)
        (settings.staging_dir / "9.9.8.pdf").write_bytes(STAGED)
        status, catalogued = await _raw_get(running.http_port, "/software/v1.2.3/file")
        assert status == 200
        assert catalogued == release  # the control: the raw client does see files
        stored = await trio.Path(settings.upload_dir / "1.2.3.pdf").resolve()
        answers = {t: await _raw_get(running.http_port, t) for t in _targets(str(stored))}
        redirected = await _raw_get(running.http_port, "/client/etc/passwd")
    forbidden = (SECRET, UNCATALOGUED, STAGED, release, *OUTSIDE)
    leaked = {t: s for t, (s, body) in answers.items() if any(f in body for f in forbidden)}
    assert not leaked
    # werkzeug answers `//` with a redirect to the single-slash path, still under /client/.
    served = {t: s for t, (s, _) in answers.items() if s < 300}
    assert not served
    assert redirected[0] == 404


async def test_a_catalogue_row_pointing_out_of_the_upload_dir_is_not_followed(
    running, api, db, settings
):
    """Defence in depth: the daemon writes plain stored names; a row changed behind its back
    (`path = '../secret.txt'`) does not make it serve a file outside upload_dir."""
    with trio.fail_after(30):
        assert (await upload(api, [("v1.2.3.pdf", pdf(seed=7))])).status_code == 201
        (settings.data_dir / "secret.txt").write_bytes(SECRET)
        for path in ("../secret.txt", str(settings.data_dir / "secret.txt")):
            await db.execute("UPDATE software SET path = $1 WHERE version = '1.2.3'", path)
            status, body = await _raw_get(running.http_port, "/software/v1.2.3/file")
            assert status == 404
            assert SECRET not in body


def test_a_data_dir_inside_the_served_dashboard_is_refused(settings):
    with pytest.raises(ValueError, match="must not be inside"):
        create_app(settings.replace(data_dir=CLIENT_DIR / "data"), pool=None)
