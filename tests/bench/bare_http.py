"""Quart-Trio's own floor on this machine: one route on hypercorn's trio worker that answers
`GET /sensors` with fixed bytes, without query validation, a database or JSON encoding.
`python -m tests.bench.bare_http PORT BODY_FILE CONTENT_TYPE` serves the bytes in BODY_FILE
and prints "ready" once it listens.

The daemon's CPU per `GET /sensors` page is judged against this one's for the same bytes:
what Quart and hypercorn cost per request is the floor under anything the daemon adds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart import Response
from quart_trio import QuartTrio


def _app(body: bytes, content_type: str) -> QuartTrio:
    app = QuartTrio(__name__)

    @app.get("/sensors")
    async def sensors() -> Response:
        return Response(body, content_type=content_type)

    return app


async def _serve(port: int, body: bytes, content_type: str) -> None:
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None  # as the daemon's: no line per request
    async with trio.open_nursery() as nursery:
        await nursery.start(serve, _app(body, content_type), config)
        print("ready", flush=True)


if __name__ == "__main__":
    port, body_file, content_type = sys.argv[1:]
    trio.run(_serve, int(port), Path(body_file).read_bytes(), content_type)
