"""The project's error hierarchy, in domain words only.

Each error says what went wrong, as a kind (`Invalid`, `NotFound`, `Unavailable`, …) and a
stable machine-readable `code` (`sensor_not_found`, `version_conflict`, …) that API bodies and
batch rejections carry. The edges choose their transport's words from the kind, each in one
table: `web/errors.py` for HTTP statuses, `ingest/service.py` for gRPC codes. The core raises
these and never a status.
"""

from __future__ import annotations


class DroneshieldError(Exception):
    """Base of every error this project raises on purpose. `code` defaults to the class's."""

    code = "internal"

    def __init__(
        self, message: str, *, code: str | None = None, details: dict[str, object] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        # Machine-readable facts beside the message (per-row errors, a count), carried into
        # the error body as they are.
        self.details = details or {}
        if code is not None:
            self.code = code


class Invalid(DroneshieldError):
    """Input that can never be accepted as sent (a malformed serial, cursor or body)."""

    code = "invalid_argument"


class InvalidReport(Invalid):
    """A report that can never be accepted as sent (bad serial)."""


class InvalidVersion(Invalid):
    """Not a semver 2.0.0 version (a leading v/V is allowed)."""

    code = "invalid_version"


class InvalidSensors(DroneshieldError):
    """Sensors to provision of which some rows break a rule (a bad serial, a serial twice):
    none of them is stored. `rows` says which and why: `{"index", "code", "message"}`, and
    `"line"` for a row read from CSV."""

    code = "invalid_sensors"

    def __init__(self, message: str, rows: list[dict[str, object]], *, code: str | None = None):
        super().__init__(message, code=code, details={"rows": rows})
        self.rows = rows


class BadRelease(DroneshieldError):
    """A well-formed upload whose release breaks a rule: its file name, the version in it, or
    a checksum that does not match its content."""

    code = "bad_release"


class UnsupportedContent(DroneshieldError):
    """Content of a kind that is not accepted (releases are PDFs sent as multipart)."""

    code = "unsupported_content"


class TooLarge(DroneshieldError):
    """More than a limit allows (a file, a request, its parts)."""

    code = "too_large"


class LengthRequired(DroneshieldError):
    """A body sent without its length where the length bounds what may be read."""

    code = "length_required"


class TimedOut(DroneshieldError):
    """The client took longer than allowed to send what it announced."""

    code = "timed_out"


class NotFound(DroneshieldError):
    """What was asked for does not exist."""

    code = "not_found"


class UnknownSensor(NotFound):
    """Sensors are provisioned by seeding or import; a report never creates one."""


class Conflict(DroneshieldError):
    """Contradicts what is stored (a version already stored with other content)."""

    code = "conflict"


class SensorsConflict(Conflict, InvalidSensors):
    """Sensors to provision that exist with another site or label (change those with PATCH):
    none of the request is stored."""

    code = "sensors_conflict"


class InUse(Conflict):
    """Cannot be removed while something depends on it (a release sensors run)."""


class Unavailable(DroneshieldError):
    """Cannot be done now; the same request may succeed later: retry."""

    code = "unavailable"


class IngestUnavailable(Unavailable):
    """The report was not committed in time (database down, shutting down): retry."""


class DatabaseUnavailable(Unavailable, ConnectionError):
    """No connection could be had (server down, restarting, or refusing this database).

    Also a ConnectionError, so code that retries on connection errors retries on it."""

    code = "database_unavailable"


class RelayUnavailable(Unavailable):
    """The relay's bus (NATS, the NOTIFY connection) cannot take messages now; sending them
    again later is harmless."""

    code = "relay_unavailable"


class StorageFull(DroneshieldError):
    """No space left to store release files (or a quota or file size limit reached)."""

    code = "insufficient_storage"
