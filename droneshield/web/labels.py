"""What of a request may become a metric label or a log field.

Prometheus keeps every label value it has seen for the life of the process: a label taken from
the request (any method name a client makes up, a raw path) lets anyone grow `/metrics` without
bound (measured: 200 made-up methods added ~370 KB; at 9 MB a scrape froze the daemon ~2.4 s).
Labels come from closed sets here; log fields are cut short and cleaned of credentials a client
may have put in the query string.
"""

from __future__ import annotations

import re
from typing import Final

from ..domain import clip

METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"}
)
OTHER_METHOD: Final = "other"
UNMATCHED_ROUTE: Final = "unmatched"
SECRET_PARAMETERS: Final = ("api_key", "apikey", "key", "token", "access_token", "password")
_SECRET_VALUE: Final = re.compile(r"(?i)(^|[&;])((?:" + "|".join(SECRET_PARAMETERS) + r")=)[^&;]*")


def method_label(method: str) -> str:
    """The method as a label: one of the standard methods, or `other`."""
    return method if method in METHODS else OTHER_METHOD


def route_label(rule: str | None) -> str:
    """The route's rule (`/sensors/<serial>`), never the raw path."""
    return rule if rule is not None else UNMATCHED_ROUTE


def logged_query(query: str) -> str:
    """The query string for the access log: secret-looking parameters masked, then cut short."""
    return clip(_SECRET_VALUE.sub(r"\1\2***", query))
