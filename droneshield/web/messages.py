"""The WebSocket protocol of `/ws` (README: Dashboard): encoding what the server sends and
checking what clients send. Pure functions, so hypothesis can throw anything at `parse`.

Server → client: `hello`, `subscribed` (a subscription is in force), `sensor` (changed sensors),
`summary` (fleet totals), `resync` (reload what you show: changes were dropped), `ping` (answer
`pong`), `error` (your last message was refused; the connection stays open).
Client → server: `subscribe` with `serials` (the sensors on screen) or a `filter` (`status`,
`version`, `q` = serial prefix, as `GET /sensors` takes them), and `pong`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import orjson

from ..config import WS_MAX_SERIALS_DEFAULT
from ..domain import STATUSES, SensorState, canonical, check_serial, display, echo
from ..errors import Invalid, InvalidReport, InvalidVersion
from ..hub import Match

SENSORS_PER_MESSAGE: Final = 500  # a big flush goes out in several `sensor` messages


class ProtocolError(Invalid):
    """A client message that cannot be honoured; the client gets an `error` message back."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Watch these serials, or (serials None) every sensor the filter accepts."""

    serials: frozenset[str] | None
    match: Match | None = None


@dataclass(frozen=True, slots=True)
class Pong:
    pass


ClientMessage = Subscribe | Pong


def sensor_item(change: SensorState) -> dict[str, Any]:
    """One sensor as `GET /sensors` shows it (camelCase, version `v1.2.3`)."""
    return {
        "id": change.id,
        "serial": change.serial,
        "version": display(change.version),
        "status": change.status,
        "online": change.status == "online",
        "lastSeenAt": change.last_seen_at,
        "statusChangedAt": change.status_changed_at,
    }


def encode(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


def hello(now: datetime, *, offline_after: float, ping_interval: float) -> str:
    return encode(
        {
            "type": "hello",
            "serverTime": now,
            "offlineAfter": offline_after,
            "pingInterval": ping_interval,
        }
    )


def sensors(changes: Sequence[SensorState]) -> list[str]:
    """`sensor` messages for a flush, at most SENSORS_PER_MESSAGE sensors each."""
    step = SENSORS_PER_MESSAGE
    return [
        encode({"type": "sensor", "sensors": [sensor_item(c) for c in changes[i : i + step]]})
        for i in range(0, len(changes), step)
    ]


def subscribed(subscription: Subscribe) -> str:
    serials = subscription.serials
    return encode({"type": "subscribed", "serials": None if serials is None else len(serials)})


def summary(totals: dict[str, object]) -> str:
    return encode({"type": "summary", **totals})


def resync(reason: str) -> str:
    return encode({"type": "resync", "reason": reason})


def ping() -> str:
    return encode({"type": "ping"})


def error(code: str, message: str) -> str:
    return encode({"type": "error", "error": {"code": code, "message": message}})


def parse(data: str | bytes, *, max_serials: int = WS_MAX_SERIALS_DEFAULT) -> ClientMessage:
    """A client message, checked; a subscription may name at most `max_serials` sensors.

    Raises:
        ProtocolError: not JSON, not an object, an unknown type, or bad fields.
    """
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProtocolError("invalid_json", "message is not valid JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError("invalid_message", "message must be a JSON object with a type")
    kind = message.get("type")
    if kind == "pong":
        return Pong()
    if kind == "subscribe":
        return _subscribe(message, max_serials)
    raise ProtocolError(
        "unknown_type", f"unknown message type {echo(str(kind))}; expected 'subscribe' or 'pong'"
    )


def _subscribe(message: dict[str, Any], max_serials: int) -> Subscribe:
    serials, where = message.get("serials"), message.get("filter")
    if (serials is None) == (where is None):
        raise ProtocolError("invalid_subscribe", "subscribe takes either 'serials' or 'filter'")
    if serials is not None:
        return Subscribe(_serials(serials, max_serials))
    return Subscribe(None, _filter(where))


def _serials(serials: object, max_serials: int) -> frozenset[str]:
    if not isinstance(serials, list) or not all(isinstance(s, str) for s in serials):
        raise ProtocolError("invalid_subscribe", "'serials' must be a list of strings")
    if len(serials) > max_serials:
        raise ProtocolError("invalid_subscribe", f"at most {max_serials} serials per subscription")
    try:
        return frozenset(check_serial(s) for s in serials)
    except InvalidReport as exc:
        raise ProtocolError("invalid_subscribe", exc.message) from None


def _filter(where: object) -> Match:
    """A predicate for the filter `{status?, version?, q?}`; `{}` accepts every sensor."""
    if not isinstance(where, dict) or not set(where) <= {"status", "version", "q"}:
        raise ProtocolError(
            "invalid_subscribe", "'filter' must be an object with status, version and/or q"
        )
    status, version, prefix = where.get("status"), where.get("version"), where.get("q")
    if status is not None and status not in STATUSES:
        raise ProtocolError("invalid_subscribe", f"status must be one of {', '.join(STATUSES)}")
    if not all(isinstance(v, str | None) for v in (version, prefix)):
        raise ProtocolError("invalid_subscribe", "'version' and 'q' must be strings")
    if version is not None:
        try:
            version = canonical(version)
        except InvalidVersion as exc:
            raise ProtocolError("invalid_subscribe", exc.message) from None

    def match(change: SensorState) -> bool:
        return (
            (status is None or change.status == status)
            and (version is None or change.version == version)
            and (not prefix or change.serial.startswith(prefix))
        )

    return match
