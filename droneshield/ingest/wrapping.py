"""A grpclib service served with every method's handler wrapped: how the daemon checks a call
(its token, its size) before the service's own code runs, without touching generated code."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from grpclib.const import Handler
from grpclib.server import Stream

if TYPE_CHECKING:
    from grpclib._typing import IServable  # the protocol grpclib's Server takes

HandlerFunc = Callable[[Stream[Any, Any]], Awaitable[None]]


class Wrapped:
    """`service` as grpclib serves it, each method's handler passed through `wrap`."""

    def __init__(self, service: IServable, wrap: Callable[[HandlerFunc], HandlerFunc]) -> None:
        self._service = service
        self._wrap = wrap

    def __mapping__(self) -> dict[str, Handler]:
        return {
            name: handler._replace(func=self._wrap(handler.func))
            for name, handler in self._service.__mapping__().items()
        }
