"""Bad input over HTTP, on real sockets against the running daemon: fuzzed query parameters and
paths, broken multipart bodies, uploads cut off half way, hostile file names, too many parts,
bodies over the limit. Each gets a 4xx with the JSON error body; nothing is stored, and no staged
file is left behind. (tests/test_api_schemathesis.py fuzzes what the OpenAPI document
describes; these throw what it does not.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio
import trio.testing
from hypothesis import strategies as st

from droneshield.config import Settings
from droneshield.web.uploads import max_request_bytes

from .support.fuzz import examples
from .support.releases import (
    BOUNDARY,
    CLOSING,
    MULTIPART,
    files_under,
    multipart,
    part_head,
    pdf,
    upload,
)

MAX_PARTS = 6

# Text that HTTP can carry in a query string or a path segment, hostile characters included.
hostile_text = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40
) | st.sampled_from(["\x00", "../../etc/passwd", "%00", "'; DROP TABLE sensor; --", "9" * 400])
queries = st.dictionaries(
    st.sampled_from(["page", "limit", "cursor", "status", "version", "q", "events", "x"])
    | hostile_text,
    hostile_text,
    max_size=4,
)
file_names = st.one_of(
    hostile_text.map(lambda s: s + "_v1.0.0.pdf"),
    st.builds(
        lambda a, b: f"{a}/{b}v1.0.0.pdf",
        st.sampled_from(["..", "", "C:\\x", "\x00", "é/ü", "a" * 300]),
        hostile_text,
    ),
    hostile_text,
)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(max_upload_bytes=64 * 1024, max_upload_parts=MAX_PARTS)


def assert_json_error(response: httpx.Response, *statuses: int) -> str:
    assert response.status_code in statuses, (response.status_code, response.text)
    error = response.json()["error"]
    assert isinstance(error["message"], str)
    assert error["message"]
    return error["code"]


async def software_rows(db: Any) -> int:
    return await db.fetchval("SELECT count(*) FROM software")


async def test_fuzzed_query_parameters_get_200_or_a_json_400(api, sensors):
    paths = ["/sensors", f"/sensors/{sensors[0]}", "/software", "/summary"]
    with trio.fail_after(120):
        for params in examples(queries, 60):
            for path in paths:
                response = await api.get(path, params=params)
                if response.status_code != 200:
                    assert_json_error(response, 400)


async def test_fuzzed_path_segments_get_a_json_4xx(api):
    # Dot segments are navigation, not input: the client resolves them before sending.
    segments = hostile_text.filter(lambda s: s not in (".", ".."))
    with trio.fail_after(120):
        for segment in examples(segments, 60):
            for template in ("/sensors/{}", "/software/{}", "/software/{}/file"):
                # An empty segment makes `//`, which is redirected to the single-slash path.
                path = template.format(quote(segment, safe=""))
                response = await api.get(path, follow_redirects=True)
                assert_json_error(response, 400, 404)


async def test_any_file_name_is_stored_under_its_version_or_refused(api, db, settings):
    with trio.fail_after(120):
        for name in examples(file_names, 60):
            response = await upload(api, [(name.encode(), pdf())])
            if response.status_code == 201:
                (stored,) = response.json()["files"]
                assert "/" not in stored["filename"]
                path = settings.upload_dir / f"{stored['version'].removeprefix('v')}.pdf"
                assert files_under(settings.data_dir) == [path]
                await db.execute("DELETE FROM software")
                await trio.Path(path).unlink()
            else:
                # 400: a name that breaks the part's header (a quote, a line break).
                assert_json_error(response, 400, 415, 422)
                assert files_under(settings.data_dir) == []


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        pytest.param(MULTIPART, b"", 400, id="empty"),
        pytest.param(MULTIPART, b"not multipart at all", 400, id="no-boundary-in-body"),
        pytest.param(MULTIPART, CLOSING, 400, id="no-parts"),
        pytest.param(
            MULTIPART,
            b"--other-boundary\r\n" + part_head(b"v1.0.0.pdf")[2:] + b"%PDF-",
            400,
            id="other-boundary-in-body",
        ),
        pytest.param(
            f"multipart/form-data; boundary={BOUNDARY}-not-this-one",
            multipart([]),
            400,
            id="other-boundary-in-header",
        ),
        pytest.param("multipart/form-data; boundary=", multipart([]), 415, id="empty-boundary"),
        pytest.param("multipart/form-data", multipart([]), 415, id="no-boundary"),
        pytest.param(
            'multipart/form-data; boundary="unterminated',
            multipart([]),
            415,
            id="unterminated-quoted-boundary",
        ),
        pytest.param(
            "multipart/form-data; boundary=é".encode(), multipart([]), 415, id="utf8-boundary"
        ),
        pytest.param(
            "multipart/mixed; boundary=" + BOUNDARY, multipart([]), 415, id="multipart-mixed"
        ),
        pytest.param(
            MULTIPART,
            f"--{BOUNDARY}\r\nX: y\r\n\r\n%PDF-\r\n".encode() + CLOSING,
            400,
            id="no-content-disposition",
        ),
        pytest.param(
            MULTIPART,
            f"--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\n%PDF-\r\n".encode() + CLOSING,
            400,
            id="no-field-name",
        ),
        pytest.param(
            MULTIPART,
            f"--{BOUNDARY}\r\nContent-Disposition: attachment\r\n\r\n".encode(),
            400,
            id="not-form-data",
        ),
        pytest.param(
            MULTIPART,
            f"--{BOUNDARY}\r\n".encode() + b"X: " + b"y" * 20_000,
            400,
            id="endless-header",
        ),
        pytest.param(
            MULTIPART,
            f"--{BOUNDARY}\r\nno colon here\r\n\r\n".encode() + CLOSING,
            400,
            id="header-without-colon",
        ),
        pytest.param(MULTIPART, part_head(b"v1.0.0.pdf") + pdf(), 400, id="unterminated-body"),
    ],
)
async def test_malformed_multipart_is_refused_and_stores_nothing(
    api, db, settings, content_type, body, status
):
    with trio.fail_after(10):
        response = await api.post("/upload", content=body, headers={"Content-Type": content_type})
    assert_json_error(response, status)
    assert await software_rows(db) == 0
    assert files_under(settings.data_dir) == []


async def test_more_parts_than_allowed_is_413_and_stores_nothing(api, db, settings):
    files = [(f"v1.0.{n}.pdf".encode(), pdf(seed=n)) for n in range(MAX_PARTS)]
    with trio.fail_after(10):
        too_many = await api.post(
            "/upload",
            content=multipart(files, fields=[(b"note", b"hello")]),
            headers={"Content-Type": MULTIPART},
        )
        just_enough = await api.post(
            "/upload", content=multipart(files), headers={"Content-Type": MULTIPART}
        )
    assert assert_json_error(too_many, 413) == "too_many_parts"
    assert just_enough.status_code == 201, just_enough.text
    assert await software_rows(db) == MAX_PARTS


async def raw_upload(port: int, headers: bytes, body: bytes) -> tuple[int, dict[str, str], Any]:
    """POST /upload over a bare socket (httpx would hide how the server ends the exchange):
    the status, the headers and the JSON body of the answer."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(
            b"POST /upload HTTP/1.1\r\nHost: droneshield\r\n"
            + f"Content-Type: {MULTIPART}\r\n".encode()
            + headers
            + b"\r\n"
            + body
        )
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += await stream.receive_some()
        head, content = answer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode().split("\r\n")
        fields = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        while len(content) < int(fields["content-length"]):
            content += await stream.receive_some()
    return int(status_line.split()[1]), fields, json.loads(content)


async def test_a_body_announced_over_the_request_limit_is_413_before_it_is_sent(
    running, db, settings
):
    limit = max_request_bytes(settings)
    with trio.fail_after(10):
        status, headers, body = await raw_upload(
            running.http_port, f"Content-Length: {limit + 1}\r\n".encode(), b""
        )
    assert (status, body["error"]["code"]) == (413, "request_too_large")
    assert headers["connection"] == "close"
    assert await software_rows(db) == 0


async def test_a_streamed_body_over_the_request_limit_is_413_even_without_a_large_file(
    running, db, settings
):
    # Ignored text fields are not files: only the whole body's limit stops them.
    filler = b"x" * (max_request_bytes(settings) + 1)
    body = multipart([(b"v1.0.0.pdf", pdf())], fields=[(b"note", filler)])
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    with trio.fail_after(20):
        status, _, answer = await raw_upload(
            running.http_port, b"Transfer-Encoding: chunked\r\n", chunked
        )
    assert (status, answer["error"]["code"]) == (413, "request_too_large")
    assert await software_rows(db) == 0
    assert files_under(settings.data_dir) == []


async def _staged(settings: Settings) -> list[Path]:
    await trio.testing.wait_all_tasks_blocked(0.01)
    return files_under(settings.staging_dir)


async def test_a_client_that_disconnects_half_way_leaves_nothing(running, db, settings):
    with trio.fail_after(20):
        stream = await trio.open_tcp_stream("127.0.0.1", running.http_port)
        await stream.send_all(
            b"POST /upload HTTP/1.1\r\nHost: droneshield\r\nContent-Length: 1000000\r\n"
            + f"Content-Type: {MULTIPART}\r\n\r\n".encode()
            + part_head(b"v1.0.0.pdf")
            + pdf(10_000)
        )
        while not await _staged(settings):  # the file is being written…
            pass
        await stream.aclose()  # …when the client goes away
        while await _staged(settings):
            pass
    assert await software_rows(db) == 0
    assert files_under(settings.data_dir) == []
