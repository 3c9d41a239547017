"""Request ids, JSON access logs and HTTP metrics.

Every request gets an id: the client's `X-Request-ID` when it is a sane token (so a proxy's id
carries through), else a fresh one. It is echoed in the response header and in the access log
line, one JSON object per request on the `droneshield.access` logger (set up in logs.py).
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from datetime import UTC, datetime
from typing import Final

import orjson
import trio
from quart import Quart, Response, g, request

from .. import metrics
from ..domain import clip
from ..logs import ACCESS_LOGGER
from .labels import logged_query, method_label, route_label

log = logging.getLogger(ACCESS_LOGGER)

REQUEST_ID_HEADER: Final = "X-Request-ID"
_SANE_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def _request_id(incoming: str | None) -> str:
    if incoming is not None and _SANE_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


def _clipped(value: str | None) -> str | None:
    return None if value is None else clip(value)


def install(app: Quart) -> None:
    @app.before_request
    async def start() -> None:
        g.request_id = _request_id(request.headers.get(REQUEST_ID_HEADER))
        g.started = trio.current_time()

    @app.after_request
    async def finish(response: Response) -> Response:
        request_id = g.get("request_id") or _request_id(None)
        response.headers[REQUEST_ID_HEADER] = request_id
        seconds = trio.current_time() - g.get("started", trio.current_time())
        route = route_label(request.url_rule.rule if request.url_rule is not None else None)
        metrics.HTTP_REQUESTS.labels(
            method_label(request.method), route, str(response.status_code)
        ).observe(seconds)
        if not log.isEnabledFor(logging.INFO):
            return response  # the line would be built for nothing (log level WARNING or above)
        log.info(
            "%s",
            orjson.dumps(
                {
                    "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
                    "requestId": request_id,
                    "method": clip(request.method),
                    "path": clip(request.path),
                    "query": logged_query(request.query_string.decode("latin-1")),
                    "route": route,
                    "status": response.status_code,
                    "ms": round(seconds * 1000, 2),
                    "bytes": response.content_length,
                    "remote": request.remote_addr,
                    "userAgent": _clipped(request.headers.get("User-Agent")),
                    # Access lines are printed bare: under --workers this says whose it is.
                    "pid": os.getpid(),
                }
            ).decode(),
        )
        return response
