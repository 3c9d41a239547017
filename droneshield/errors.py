"""The project's error hierarchy. Edges translate these (to gRPC statuses, to HTTP JSON errors);
the core raises them and never speaks a transport's vocabulary."""

from __future__ import annotations


class DroneshieldError(Exception):
    """Base of every error this project raises on purpose."""

    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidReport(DroneshieldError):
    """A report that can never be accepted as sent (bad serial)."""

    code = "invalid_argument"


class UnknownSensor(DroneshieldError):
    """Sensors are provisioned by seeding or import; a report never creates one."""

    code = "not_found"


class IngestUnavailable(DroneshieldError):
    """The report was not committed in time (database down, shutting down): retry."""

    code = "unavailable"


class InvalidVersion(DroneshieldError):
    """Not a semver 2.0.0 version (a leading v/V is allowed)."""

    code = "invalid_version"


class UploadRejected(DroneshieldError):
    """An upload that breaks a rule; `status` is the HTTP status the edge answers with."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
