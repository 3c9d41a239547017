"""URL converters that keep one resource's routes from answering for another's paths.

`/software/unreleased` and `/sensors/{serial}/events` are resources of their own: without these,
`DELETE /software/<version>` and `PATCH /sensors/<serial>` also matched those paths, so `Allow`
advertised methods they do not have and a wrong method got 400 instead of 405.
"""

from __future__ import annotations

from werkzeug.routing import BaseConverter, PathConverter


class VersionConverter(BaseConverter):
    """A release version in a path: one segment, never the word `unreleased`."""

    regex = r"(?!unreleased$)[^/]+"


class SerialConverter(PathConverter):
    """A serial in a path (it may hold `/`), never ending in `/events`: that is the history."""

    regex = r"[^/](?:(?!/events$).)*"


CONVERTERS = {"version": VersionConverter, "serial": SerialConverter}
