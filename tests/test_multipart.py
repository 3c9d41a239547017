"""The streaming multipart reader: however the body is cut into chunks, the parts come out
whole and in order."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from droneshield.errors import DroneshieldError
from droneshield.web.errors import status_of
from droneshield.web.multipart import MultipartReader, PartData, PartEnd, PartStart

from .support.releases import BOUNDARY, multipart

names = st.text(st.characters(codec="utf-8", exclude_characters='"\\\r\n'), max_size=20)
contents = st.binary(max_size=3000) | st.just(f"\r\n--{BOUNDARY[:-1]}".encode() * 3)


def _parts(body: bytes, cuts: list[int], max_parts: int = 8) -> list[tuple[str, str | None, bytes]]:
    reader = MultipartReader(BOUNDARY, max_parts=max_parts)
    parts: list[tuple[str, str | None, bytes]] = []
    data = bytearray()
    edges = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
    for start, end in itertools.pairwise(edges):
        for event in reader.feed(body[start:end]):
            if isinstance(event, PartStart):
                parts.append((event.name, event.filename, b""))
            elif isinstance(event, PartData):
                data += event.data
            elif isinstance(event, PartEnd):
                name, filename, _ = parts[-1]
                parts[-1] = (name, filename, bytes(data))
                data.clear()
    reader.close()
    return parts


@given(
    files=st.lists(st.tuples(names.filter(bool), contents), min_size=1, max_size=4),
    digests=st.lists(st.text("0123456789abcdef", max_size=64), max_size=2),
    cuts=st.lists(st.integers(min_value=0), max_size=30),
)
def test_parts_survive_any_chunking(files, digests, cuts):
    body = multipart(
        [(n.encode(), c) for n, c in files], fields=[(b"sha256", d.encode()) for d in digests]
    )
    expected = [("files", n, c) for n, c in files] + [("sha256", None, d.encode()) for d in digests]
    assert _parts(body, cuts) == expected


def test_a_body_cut_short_is_rejected():
    body = multipart([(b"v1.0.0.pdf", b"%PDF-1.7")])
    with pytest.raises(DroneshieldError) as caught:
        _parts(body[:-10], [])
    assert (status_of(caught.value), caught.value.code) == (400, "malformed_multipart")


def test_a_body_with_more_parts_than_allowed_is_413():
    body = multipart([(b"v1.0.0.pdf", b"%PDF-1.7")], fields=[(b"note", b"x")] * 3)
    assert len(_parts(body, [], max_parts=4)) == 4
    with pytest.raises(DroneshieldError) as caught:
        _parts(body, [], max_parts=3)
    assert (status_of(caught.value), caught.value.code) == (413, "too_many_parts")
