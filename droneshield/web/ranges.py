"""`Range` requests on a file of known size, as RFC 9110 §14 has them.

Quart (through werkzeug) answered `bytes=-4` and `bytes=0-99999999999999999999` with a 500 and
a range past the end with a `Content-Length` longer than the body it sent. Here the header is
read against the file's real size: a suffix range is the last N bytes, a range running past the
end is cut at the end, a range starting past the end is unsatisfiable (416), and anything this
module cannot read (another unit, several ranges, bad syntax, absurdly long numbers) is ignored
as the RFC allows: the whole file is sent with 200.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

RANGE_HEADER_MAX: Final = 200  # characters; a longer Range header is ignored
_ONE_RANGE: Final = re.compile(r"bytes[ \t]*=[ \t]*(\d*)[ \t]*-[ \t]*(\d*)[ \t]*", re.ASCII)


class Unsatisfiable(Exception):
    """The range selects no byte of the file: answer 416 with `Content-Range: bytes */size`."""


@dataclass(frozen=True)
class ByteRange:
    start: int  # first byte sent
    stop: int  # one past the last byte sent

    @property
    def length(self) -> int:
        return self.stop - self.start

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.stop - 1}/{size}"


def byte_range(header: str | None, size: int) -> ByteRange | None:
    """The part of a `size`-byte file that `header` asks for, or None for the whole file.

    Raises:
        Unsatisfiable: the range starts at or past the end, or asks for the last 0 bytes.
    """
    if header is None or len(header) > RANGE_HEADER_MAX:
        return None
    match = _ONE_RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first:
        if not last:
            return None  # "bytes=-" is not a range
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise Unsatisfiable
        return ByteRange(max(size - suffix, 0), size)
    start = int(first)
    if last and int(last) < start:
        return None  # invalid: ignored, not unsatisfiable (RFC 9110 §14.1.1)
    if start >= size:
        raise Unsatisfiable
    stop = size if not last else min(int(last) + 1, size)
    return ByteRange(start, stop)
