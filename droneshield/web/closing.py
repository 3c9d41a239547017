"""HTTP connections that close when they should (a fix for hypercorn 0.18 + quart-trio 0.12).

quart-trio runs each request as two tasks in one nursery: one sends the response, the other
waits for the client's messages and cancels the nursery on `http.disconnect`. hypercorn sends
that disconnect as a consequence of the response's last body chunk, while the sending task is
still inside hypercorn's own follow-up: closing the socket (HTTP/1.0, `Connection: close`, an
early 401 or 413) or arming the keep-alive timer. The cancel lands there, so the socket stays
open (measured: still open after 90 s) and an idle keep-alive connection is never timed out;
any client could use up the file descriptors. A rare `BusyResourceError` on early answers came
from the same interrupted close.

Here the disconnect cancels the request only while its response is unfinished (a client that
went away mid-download still stops the handler). Reproduction and where it is reported: README,
Security.
"""

from __future__ import annotations

import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, ASGISendEvent
from quart.asgi import ASGIHTTPConnection
from quart.wrappers import Request
from quart_trio.asgi import TrioASGIHTTPConnection


class ClosingHTTPConnection(TrioASGIHTTPConnection):
    """quart-trio's HTTP connection, leaving hypercorn's close after the last chunk alone."""

    _finished = False  # the response's last chunk was handed to hypercorn

    # Both overrides keep quart-trio's signatures (with the nursery), which break those of the
    # quart base class they override.
    async def handle_request(  # type: ignore[override]
        self, nursery: trio.Nursery, request: Request, send: ASGISendCallable
    ) -> None:
        async def send_noting_the_end(message: ASGISendEvent) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self._finished = True
            await send(message)

        await super().handle_request(nursery, request, send_noting_the_end)

    async def handle_messages(  # type: ignore[override]
        self, nursery: trio.Nursery, request: Request, receive: ASGIReceiveCallable
    ) -> None:
        await ASGIHTTPConnection.handle_messages(self, request, receive)
        self.client_gone(nursery)

    def client_gone(self, nursery: trio.Nursery) -> None:
        """The client disconnected (or hypercorn says so after the last chunk): stop the
        request's tasks unless its response is complete and hypercorn is closing up."""
        if not self._finished:
            nursery.cancel_scope.cancel()
