"""The WebSocket protocol of `/ws` (README: Dashboard): encoding what the server sends and
checking what clients send. Pure functions, so hypothesis can throw anything at `parse`.

Server → client: `hello`, `subscribed` (a subscription is in force), `sensor` (changed sensors),
`summary` (fleet totals), `resync` (reload what you show: changes were dropped), `ping` (answer
`pong`), `error` (your last message was refused; the connection stays open).
Client → server: `subscribe` with `serials` (the sensors on screen), a `filter` (`status`,
`version`, `site`, `q`, as `GET /sensors` takes them: every change of every sensor that
matches), or both (every change of the sensors on screen, and the status or version changes
that bring other sensors into the filter, so a page can announce them); and `pong`.

A `sensor` item is a sensor as `GET /sensors` lists it (`reportedVersion`: the version it
reports when that one was never uploaded, so not stored; else null), with `site`, `retired`
(true once an operator retired it: it leaves every listing but `status=retired`) and
`heartbeat` (true when only `lastSeenAt` moved); `label` only on a change an operator made
(provisioned, restored, site or label changed, retired), since reports do not read it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import orjson

from ..config import WS_MAX_SERIALS_DEFAULT
from ..domain import STATUSES, SensorState, Status, canonical, check_serial, display, echo, fold
from ..errors import Invalid, InvalidReport, InvalidVersion
from ..hub import Match

SENSORS_PER_MESSAGE: Final = 500  # a big flush goes out in several `sensor` messages


class ProtocolError(Invalid):
    """A client message that cannot be honoured; the client gets an `error` message back."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Watch these serials and every sensor `match` accepts (see `Hub.subscribe`)."""

    serials: frozenset[str] | None
    match: Match | None = None


@dataclass(frozen=True, slots=True)
class Pong:
    pass


ClientMessage = Subscribe | Pong


def sensor_item(change: SensorState) -> dict[str, Any]:
    """One sensor as `GET /sensors` shows it (camelCase, version `v1.2.3`)."""
    return item(
        change.id,
        change.serial,
        change.version,
        change.status,
        change.last_seen_at,
        change.status_changed_at,
    )


def item(
    sensor_id: int,
    serial: str,
    version: str | None,
    status: Status,
    last_seen_at: datetime | None,
    status_changed_at: datetime | None,
) -> dict[str, Any]:
    """`sensor_item` of a sensor's fields: what a page builds straight from its rows."""
    return {
        "id": sensor_id,
        "serial": serial,
        "version": display(version),
        "status": status,
        "online": status == "online",
        "lastSeenAt": last_seen_at,
        "statusChangedAt": status_changed_at,
    }


def live_item(change: SensorState) -> dict[str, Any]:
    """A changed sensor as `/ws` sends it: as listed, plus what only a live change knows."""
    item = {
        **sensor_item(change),
        "site": change.site,
        "retired": change.retired,
        "reportedVersion": display(change.reported_version),
        "heartbeat": change.heartbeat,
    }
    if change.edit is not None:
        item["label"] = change.edit.label
    if change.before is not None:
        status, version = change.before
        item["before"] = {"status": status, "version": display(version)}
    return item


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
        encode({"type": "sensor", "sensors": [live_item(c) for c in changes[i : i + step]]})
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
    if serials is None and where is None:
        raise ProtocolError("invalid_subscribe", "subscribe takes 'serials', 'filter' or both")
    if where is None:
        return Subscribe(_serials(serials, max_serials))
    match = _filter(where)
    if serials is None:
        return Subscribe(None, match)
    leaving = message.get("leaving", False)
    if not isinstance(leaving, bool):
        raise ProtocolError("invalid_subscribe", "'leaving' must be true or false")
    moving = _moving(match) if leaving else _entering(match)
    return Subscribe(_serials(serials, max_serials), moving)


def _entering(match: Match) -> Match:
    """`match`, for transitions only: heartbeats never bring a sensor into a filter (status and
    version are unchanged), and a page's own rows come through its serials."""

    def entering(change: SensorState) -> bool:
        return not change.heartbeat and match(change)

    return entering


def _moving(match: Match) -> Match:
    """`match` for transitions into the filter and out of it (a sensor it accepted before the
    change): what a page being read needs, since the rows it will show are not known until
    the read is done, and one that leaves the filter meanwhile (gone offline, on an online
    page) would never be told of again."""

    def moving(change: SensorState) -> bool:
        if change.heartbeat:
            return False
        if match(change):
            return True
        before = change.before
        if before is None:
            return False
        status, version = before
        return match(dataclasses.replace(change, status=status, version=version))

    return moving


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
    """A predicate for the filter `{status?, version?, site?, q?}`; `{}` accepts every sensor
    but retired ones, which only `status: "retired"` accepts (and only they), as in
    `GET /sensors`. `q` matches anywhere in the serial, ASCII letters in any case (`fold`), and
    in the label of a change that carries it (an operator's; reports do not read the label)."""
    if not isinstance(where, dict) or not set(where) <= {"status", "version", "site", "q"}:
        raise ProtocolError(
            "invalid_subscribe", "'filter' must be an object with status, version, site and/or q"
        )
    # Empty means any, as in `GET /sensors` (a form's empty field).
    status, version, site, text = (
        None if where.get(k) == "" else where.get(k) for k in ("status", "version", "site", "q")
    )
    if status is not None and status not in (*STATUSES, "retired"):
        raise ProtocolError(
            "invalid_subscribe", f"status must be one of {', '.join(STATUSES)}, retired"
        )
    retired = status == "retired"
    if retired:
        status = None
    if not all(isinstance(v, str | None) for v in (version, site, text)):
        raise ProtocolError("invalid_subscribe", "'version', 'site' and 'q' must be strings")
    needle = fold(text) if text else None
    if version is not None:
        try:
            version = canonical(version)
        except InvalidVersion as exc:
            raise ProtocolError("invalid_subscribe", exc.message) from None

    def match(change: SensorState) -> bool:
        return (
            change.retired == retired
            and (status is None or change.status == status)
            and (version is None or change.version == version)
            and (site is None or change.site == site)
            and (needle is None or _contains(change, needle))
        )

    return match


def _contains(change: SensorState, needle: str) -> bool:
    """`needle` (folded) in the serial, or in the label when the change carries it."""
    if needle in fold(change.serial):
        return True
    label = change.edit.label if change.edit is not None else None
    return label is not None and needle in fold(label)
