"""Streaming multipart/form-data: python-multipart's parser turned into a list of part events
per chunk, so the caller can handle each event with `await` (write to a file) while memory
stays bounded by the chunk size.

python-multipart calls back synchronously from inside `write`; the callbacks only record what
happened, and the async side acts on it once `feed` returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header

from ..errors import Invalid, TooLarge

HEADERS_MAX: Final = 16  # headers per part
HEADER_MAX: Final = 8 * 1024  # bytes per header line


@dataclass(frozen=True, slots=True)
class PartStart:
    name: str
    filename: str | None  # None: a plain form field


@dataclass(frozen=True, slots=True)
class PartData:
    data: bytes


@dataclass(frozen=True, slots=True)
class PartEnd:
    pass


Event = PartStart | PartData | PartEnd


def _text(raw: bytes) -> str:
    # Browsers send UTF-8 names unescaped; RFC 7578 says nothing else is portable.
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _malformed(detail: str) -> Invalid:
    return Invalid(f"malformed multipart body: {detail}", code="malformed_multipart")


class MultipartReader:
    """Parses one multipart/form-data body fed in chunks."""

    def __init__(self, boundary: str, *, max_parts: int) -> None:
        """Raises:
        Invalid: the boundary is too long or not latin-1.
        """
        self._max_parts = max_parts
        self._parts = 0
        self._events: list[Event] = []
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._ended = False
        try:
            self._parser = self._open(boundary)
        except (FormParserError, UnicodeEncodeError) as exc:
            raise _malformed(f"unusable boundary ({exc})") from None

    def _open(self, boundary: str) -> MultipartParser:
        return MultipartParser(
            boundary.encode("latin-1"),
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": lambda: self._events.append(PartEnd()),
                "on_end": self._on_end,
            },
            max_header_count=HEADERS_MAX,
            max_header_size=HEADER_MAX,
        )

    def feed(self, chunk: bytes) -> list[Event]:
        """The events this chunk completes, in order.

        Raises:
            Invalid: the body is not valid multipart.
            TooLarge: it has more than `max_parts` parts.
        """
        try:
            self._parser.write(chunk)
        except FormParserError as exc:
            raise _malformed(str(exc)) from None
        events, self._events = self._events, []
        return events

    def close(self) -> None:
        """The body ended.

        Raises:
            Invalid: it ended before the closing boundary (a truncated upload).
        """
        if not self._ended:
            raise _malformed("it ends before the closing boundary")

    def _on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > self._max_parts:
            raise TooLarge(f"at most {self._max_parts} parts per request", code="too_many_parts")
        self._headers.clear()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        # Bytes in, bytes out (latin-1 both ways): the names are decoded once, below.
        disposition, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        if disposition != b"form-data" or b"name" not in params:
            raise _malformed("a part without Content-Disposition: form-data; name=…")
        filename = params.get(b"filename")
        self._events.append(
            PartStart(_text(params[b"name"]), None if filename is None else _text(filename))
        )

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._events.append(PartData(data[start:end]))

    def _on_end(self) -> None:
        self._ended = True
