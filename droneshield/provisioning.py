"""Provisioning sensors: the rules a row must meet (serial, site, label), reading them from JSON
or CSV, and reporting every broken row at once. Pure code: `db/provisioning.py` stores what
passes, in one transaction, so a request is stored whole or not at all.

A serial is 1-128 printable ASCII characters (domain.py), but not `.` or `..`: those are
dot segments of a URL path, which browsers, curl and HTTP libraries resolve before sending, so
`/sensors/..` could never reach the sensor (`%2E` is resolved too). A site (up to 128 bytes)
and a label (up to 256 bytes) are optional printable text; empty means none.
"""

from __future__ import annotations

import csv
import re
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final, NamedTuple

from .domain import SERIAL_MAX, check_serial
from .errors import InvalidReport, InvalidSensors

REQUEST_MAX: Final = 10_000  # sensors per HTTP request; bigger imports use the CLI
ERRORS_SHOWN: Final = 100  # row errors listed in one refusal (the message counts them all)
SITE_MAX: Final = 128  # bytes (UTF-8)
LABEL_MAX: Final = 256  # bytes (UTF-8)
CSV_COLUMNS: Final = ("serial", "site", "label")
UNADDRESSABLE: Final = frozenset({".", ".."})  # serials no URL can name (the module's docstring)
# The byte order mark spreadsheets (Excel's "CSV UTF-8") put before the header.
BOM: Final = "\ufeff"


def _ascii_field(most: int) -> str:
    """Up to `most` printable ASCII characters, none of them a space at either end."""
    return rf"(?:[\x21-\x7e](?:[\x20-\x7e]{{0,{most - 2}}}[\x21-\x7e])?)"


# Printable ASCII, where a character is a byte, with no space to trim: what almost every row
# holds, and all the checks of `spec` in one match (from_csv).
_ASCII_FIELD: Final = {
    "serial": _ascii_field(SERIAL_MAX),
    "site": _ascii_field(SITE_MAX) + "?",
    "label": _ascii_field(LABEL_MAX) + "?",
}


class SensorSpec(NamedTuple):
    """A named tuple, not a frozen dataclass: an import makes one per row, and a frozen
    dataclass's construction (one object.__setattr__ per field) was ~1.5 s of a million."""

    serial: str
    site: str | None = None
    label: str | None = None


@dataclass(frozen=True, slots=True)
class RowError:
    index: int  # 0-based: the position in the JSON list, the data row in a CSV (header not counted)
    code: str
    message: str
    line: int | None = None  # a CSV row's line in its file (1: the header), which editors show

    def as_json(self) -> dict[str, object]:
        shown: dict[str, object] = {"index": self.index, "code": self.code, "message": self.message}
        if self.line is not None:
            shown["line"] = self.line
        return shown


class Rows:
    """Collects row errors while rows are read; `check()` refuses them all at once."""

    def __init__(self) -> None:
        self.errors: list[RowError] = []
        self.unlisted = 0  # broken rows counted but not kept (a check that lists the first few)
        self.count = 0
        # Where a CSV's rows are: from row `_starts[i]` on, a row's line is its index plus
        # `_shifts[i]` (until a blank line or a quoted newline moves them on). An entry per such
        # place, not per row: a few for most files; 16 bytes a row for a double-spaced one.
        self._starts = array("q")
        self._shifts = array("q")

    def shifted(self, index: int, shift: int) -> None:
        """From row `index` on, a row's line is its index plus `shift` (replacing what was said
        of rows from `index` on: a skipped row gives its index back to the next)."""
        while self._starts and self._starts[-1] >= index:
            self._starts.pop()
            self._shifts.pop()
        self._starts.append(index)
        self._shifts.append(shift)

    def line(self, index: int) -> int | None:
        """Row `index`'s line in its CSV file; None for rows not read from one."""
        at = bisect_right(self._starts, index)
        return index + self._shifts[at - 1] if at else None

    def where(self, index: int) -> str:
        """How a message names row `index`: by its line in a file, else by its index."""
        line = self.line(index)
        return f"row {index}" if line is None else f"line {line}"

    def error(self, index: int, code: str, message: str) -> RowError:
        """A row's error, with its line when it was read from a file."""
        return RowError(index, code, message, self.line(index))

    def add(self, index: int, code: str, message: str) -> None:
        self.errors.append(self.error(index, code, message))

    def check(self) -> None:
        """Raises:
        InvalidSensors: any row was broken; lists the first ERRORS_SHOWN."""
        if not self.errors:
            return
        self.errors.sort(key=lambda e: e.index)
        n = len(self.errors) + self.unlisted
        raise InvalidSensors(
            f"{n:,} of {self.count:,} rows are invalid; nothing was stored"
            + (f" (the first {ERRORS_SHOWN} are listed)" if n > ERRORS_SHOWN else ""),
            [e.as_json() for e in self.errors[:ERRORS_SHOWN]],
        )


def _text(value: object, name: str, limit: int) -> str | None:
    """Raises:
    ValueError: not text, too long, or with control characters."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    if len(value.encode()) > limit:
        raise ValueError(f"{name} is longer than {limit} bytes")
    if not value.isprintable():
        raise ValueError(f"{name} must be printable text (no control characters)")
    return value


def check_site(site: str) -> str:
    """A site name as provisioning stores it (webhook filters name sites the same way).

    Raises:
        ValueError: empty, too long, or with control characters.
    """
    checked = _text(site, "site", SITE_MAX)
    if checked is None:
        raise ValueError("site must not be empty")
    return checked


Numbered = tuple[int, SensorSpec]  # a row's index in its request, and what it asks for


def spec(index: int, serial: object, site: object, label: object, rows: Rows) -> Numbered | None:
    """The row, or None after noting in `rows` what is wrong with it."""
    if not isinstance(serial, str):
        rows.add(index, "invalid_serial", "serial is required and must be a string")
        return None
    try:
        check_serial(serial)
    except InvalidReport as exc:
        rows.add(index, "invalid_serial", exc.message)
        return None
    if serial in UNADDRESSABLE:
        rows.add(
            index,
            "invalid_serial",
            f"serial {serial!r} cannot be provisioned: a URL path resolves it away "
            f"(/sensors/{serial}), so no request could name the sensor",
        )
        return None
    try:
        return index, SensorSpec(
            serial, _text(site, "site", SITE_MAX), _text(label, "label", LABEL_MAX)
        )
    except ValueError as exc:
        rows.add(index, "invalid_field", str(exc))
        return None


def from_json(items: Iterable[object], rows: Rows) -> Iterator[Numbered]:
    """Sensors of a JSON list of `{"serial", "site", "label"}` objects."""
    for index, item in enumerate(items):
        rows.count += 1
        if not isinstance(item, dict):
            rows.add(index, "invalid_row", "each sensor must be an object with a serial")
            continue
        unknown = set(item) - set(CSV_COLUMNS)
        if unknown:
            rows.add(index, "invalid_row", f"unknown fields: {', '.join(sorted(unknown))}")
            continue
        found = spec(index, item.get("serial"), item.get("site"), item.get("label"), rows)
        if found is not None:
            yield found


class CsvHeaderError(Exception):
    """The CSV's header is missing or names other columns."""


def _without_bom(lines: Iterable[str]) -> Iterator[str]:
    """`lines`, the first without a byte order mark: removed before the CSV reader sees it, which
    would read `\ufeff"serial"` as an unquoted field holding the quotes."""
    lines = iter(lines)
    first = next(lines, None)
    if first is None:
        return
    yield first.removeprefix(BOM)
    yield from lines


def from_csv(lines: Iterable[str], rows: Rows) -> Iterator[Numbered]:
    """Sensors of CSV lines: a header `serial[,site][,label]` (any order, after a byte order
    mark if the file has one), then one row each; blank lines, lines of spaces and rows of
    empty fields are skipped, and so are spaces around a field (row indexes count sensors;
    `rows` learns each row's line in the file).

    Raises:
        CsvHeaderError: the header is missing, unreadable (a stray quote), lacks `serial` or
            names unknown columns.
    """
    # Spaces after a comma are not part of the next field (`serial, site, label`, as people type
    # a CSV; the header's names were already read so), and a quoted field after them is read
    # as quoted: `DS-1, "north, gate"` is one site.
    reader = csv.reader(_without_bom(lines), strict=True, skipinitialspace=True)
    header: list[str] = []
    while not any(header):  # blank lines above the header, as editors and exports leave them
        try:
            header = [h.strip().lower() for h in next(reader)]
        except StopIteration:
            raise CsvHeaderError(
                "the CSV is empty; its first line must be serial,site,label"
            ) from None
        except csv.Error as exc:
            header_at = f"the CSV header (line {reader.line_num})"
            if "new-line character seen in unquoted field" in str(exc):
                raise CsvHeaderError(
                    f"{header_at} holds a carriage return outside quotes: a file whose lines end "
                    "with CR alone (classic Mac OS) must be saved with LF or CRLF ends"
                ) from None
            raise CsvHeaderError(f"{header_at} cannot be read: {exc}") from None
    if (
        "serial" not in header
        or not set(header) <= set(CSV_COLUMNS)
        or len(set(header)) < len(header)
    ):
        raise CsvHeaderError(
            f"CSV header {','.join(header)!r} must name serial and optionally site and label, "
            "once each"
        )
    where = {name: header.index(name) for name in header}
    # A row whose fields, joined by newlines, match this is valid as it is: one C call instead
    # of `spec`'s checks (a field holding a newline cannot match, so it takes the long way).
    plain = re.compile("\n".join(_ASCII_FIELD[name] for name in header)).fullmatch
    serial_at, site_at, label_at = where["serial"], where.get("site"), where.get("label")
    index = -1
    shift = reader.line_num + 1  # a row's last line minus its index, as `rows` was last told
    rows.shifted(0, shift)  # the first row, right under the header unless told otherwise
    while True:
        index += 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # named by the line it was found on
            message = str(exc)
            if message.startswith("',' expected after"):
                message += " (a closing quote must end its field: no space after it)"
            if message == "unexpected end of data":  # found at the end, wherever it began
                message = (
                    "a quoted field is not closed before the end of the file (its row starts "
                    f"on line {index + shift} or after)"
                )
            if reader.line_num - index != shift:
                shift = reader.line_num - index
                rows.shifted(index, shift)
            rows.count += 1
            rows.add(index, "invalid_csv", message)
            continue
        # A blank line (one at the end, most often) holds no sensor; nor does one of spaces
        # (which the reader, skipping spaces after commas, gives as one empty field).
        if not record or (len(record) == 1 and not record[0].strip()):
            index -= 1
            continue
        # One subtraction a row: the shift grows only past a blank line or a quoted newline.
        if reader.line_num - index != shift:
            shift = reader.line_num - index
            # A row holding quoted newlines starts that many lines above its last one.
            spans = sum(field.count("\n") for field in record)
            rows.shifted(index, shift - spans)
            if spans:
                rows.shifted(index + 1, shift)
        rows.count += 1
        if len(record) != len(header):
            rows.add(index, "invalid_row", f"{len(record)} fields, the header has {len(header)}")
            continue
        valid = plain("\n".join(record)) and record[serial_at] not in UNADDRESSABLE
        if not valid:
            if not any(field.strip() for field in record):  # `,,`: a spreadsheet's empty row
                rows.count -= 1
                index -= 1
                continue
            # Spaces around a field are not part of it (`DS-1 , north`), quoted or not: a serial
            # or site that differs from another by an invisible space is always a typing slip.
            record = [field.strip(" ") for field in record]
        site = None if site_at is None else record[site_at]
        label = None if label_at is None else record[label_at]
        if valid:
            yield index, SensorSpec(record[serial_at], site or None, label or None)
            continue
        found = spec(index, record[serial_at], site, label, rows)
        if found is not None:
            yield found
