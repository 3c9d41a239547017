"""`POST /sensors` (provision, JSON or CSV), `PATCH /sensors/{serial}` (site, label) and
`DELETE /sensors/{serial}` (retire). Every one needs the API key.

Each publishes the sensors it changed to the hub once committed, as reports and expiries do,
so live views (and, through the relay, the other daemons' live views) see a sensor arrive,
change site or label, or leave when retired."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Sequence
from typing import Final

import orjson
from pydantic import Field
from quart import Blueprint, request
from quart_schema import DataSource, validate_response

from ..db import provisioning as db
from ..db import sensors as sensors_db
from ..db.pool import acquire
from ..domain import check_serial, echo
from ..errors import Invalid, InvalidReport, NotFound, TooLarge, UnsupportedContent
from ..provisioning import (
    LABEL_MAX,
    REQUEST_MAX,
    SITE_MAX,
    CsvHeaderError,
    Numbered,
    Rows,
    from_csv,
    from_json,
    spec,
)
from .auth import requires_key
from .bodies import read_within
from .context import hub, pool
from .schema import ApiModel, NoContent, errors, reads_body, responds
from .sensors import Sensor

blueprint = Blueprint("provisioning", __name__)

BODY_MAX: Final = 8 * 1024 * 1024  # bytes: 10,000 sensors with long labels fit


class NewSensor(ApiModel):
    serial: str = Field(description="1-128 printable ASCII characters")
    site: str | None = Field(None, description=f"up to {SITE_MAX} bytes")
    label: str | None = Field(None, description=f"up to {LABEL_MAX} bytes")


class NewSensors(ApiModel):
    """Up to 10,000 sensors; or a `text/csv` body with the header `serial,site,label` (site
    and label optional)."""

    sensors: list[NewSensor]


class ProvisionResult(ApiModel):
    created: int = Field(description="sensors added (retired ones provisioned again count here)")
    existing: int = Field(description="sensors already provisioned exactly so")


class SensorChanges(ApiModel):
    """What to change; a field left out stays, null clears it."""

    site: str | None = None
    label: str | None = None


def _decoded(body: bytes) -> str:
    """Raises:
    Invalid: not UTF-8 (says on which line)."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = body[: exc.start].count(b"\n") + 1
        raise Invalid(
            f"the body is not UTF-8 (line {line}, byte {exc.start})", code="invalid_encoding"
        ) from None


def _json_items(text: str) -> list[object]:
    """Raises:
    Invalid: not JSON, or not `{"sensors": [...]}`."""
    try:
        # orjson refuses nesting past 1,024 levels as invalid JSON (json raised RecursionError).
        document = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise Invalid(f"the body is not JSON: {exc}", code="invalid_json") from None
    if not isinstance(document, dict) or not isinstance(document.get("sensors"), list):
        raise Invalid('the body must be {"sensors": [...]}', code="invalid_json")
    items: list[object] = document["sensors"]
    return items


def _read(text: str, csv: bool, rows: Rows) -> list[Numbered]:
    """Raises:
    Invalid: an unreadable body. TooLarge: more than REQUEST_MAX sensors."""
    if csv:
        # Lines as `sensors import` reads a file: split at \n only (so \r\n too), ends kept and
        # untranslated, so a quoted field keeps its line breaks and a row's line is the same
        # number either way. A file whose lines end in \r alone is refused, as the import
        # refuses it. (`str.splitlines` also split at \x1c-\x1e, \x85, \u2028… and dropped
        # the ends.)
        try:
            specs = list(from_csv(io.StringIO(text, newline="\n"), rows))
        except CsvHeaderError as exc:
            raise Invalid(str(exc), code="invalid_csv") from None
    else:
        specs = list(from_json(_json_items(text), rows))
    if rows.count > REQUEST_MAX:
        raise TooLarge(
            f"{rows.count:,} sensors in one request; at most {REQUEST_MAX:,} (use `droneshield "
            "sensors import` for more)",
            code="too_many_sensors",
        )
    return specs


async def _one(specs: Sequence[Numbered]) -> AsyncIterator[Sequence[Numbered]]:
    yield specs


@blueprint.post("/sensors")
@requires_key
@validate_response(ProvisionResult, 201)
@validate_response(ProvisionResult, 200)
@errors(400, 401, 409, 413, 415, 422)
@reads_body(NewSensors, DataSource.JSON)  # or text/csv
async def provision() -> tuple[ProvisionResult, int]:
    """Provision sensors, all or none: JSON `{"sensors": [{"serial", "site", "label"}]}` or
    CSV (`Content-Type: text/csv`, header `serial,site,label`; site and label optional).

    One broken row (bad serial, a serial given twice, …) refuses the request with 422 and
    every broken row listed; a sensor stored with another site or label with 409. A sensor
    already provisioned exactly so counts as `existing`; a retired one is restored with its
    history. 201 when something was created, 200 when nothing was new.
    """
    mimetype = request.mimetype
    if mimetype not in ("application/json", "text/csv"):
        raise UnsupportedContent("send application/json or text/csv", code="unsupported_media_type")
    rows = Rows()
    specs = _read(_decoded(await read_within(BODY_MAX)), mimetype == "text/csv", rows)
    async with acquire(pool()) as conn:
        done = await db.provision(conn, _one(specs), rows, changes=True)
    hub().publish(done.changes)
    return ProvisionResult(created=done.created, existing=done.existing), (
        201 if done.created else 200
    )


def _serial(serial: str) -> str:
    """Raises:
    NotFound: not a serial at all."""
    try:
        return check_serial(serial)
    except InvalidReport:
        raise NotFound(f"no sensor {echo(serial)}", code="sensor_not_found") from None


def _changes(body: bytes) -> dict[str, str | None]:
    """Raises:
    Invalid: not a JSON object of site and/or label, or a value breaking their rules."""
    try:
        document = orjson.loads(_decoded(body))
    except orjson.JSONDecodeError as exc:
        raise Invalid(f"the body is not JSON: {exc}", code="invalid_json") from None
    if not isinstance(document, dict) or not document or not set(document) <= {"site", "label"}:
        raise Invalid(
            'the body must be {"site": …, "label": …} (either or both)', code="invalid_json"
        )
    rows = Rows()
    found = spec(0, "x", document.get("site"), document.get("label"), rows)
    if found is None:
        raise Invalid(rows.errors[0].message, code="invalid_parameter")
    _, checked = found
    return {name: getattr(checked, name) for name in document}


@blueprint.patch("/sensors/<serial:serial>")
@requires_key
@validate_response(Sensor)
@errors(400, 401, 404, 413)
async def change_sensor(serial: str) -> Sensor:
    """Change a sensor's site and/or label (null clears one)."""
    changes = _changes(await read_within(BODY_MAX))
    async with acquire(pool()) as conn:
        changed = await db.update(conn, _serial(serial), changes)
        if changed is None:
            raise NotFound(f"no sensor {echo(serial)}", code="sensor_not_found")
        detail = await sensors_db.get(conn, serial)
    assert detail is not None  # sensors are never deleted
    hub().publish([changed])
    return Sensor.of(detail.listing)


@blueprint.delete("/sensors/<serial:serial>")
@requires_key
@responds(204, NoContent)
@errors(401, 404)
async def retire_sensor(serial: str) -> tuple[str, int]:
    """Retire a sensor (204): it leaves listings, totals and live views (`status=retired`
    lists it), its reports are refused with NOT_FOUND, its history stays. Provisioning it
    again brings it back. Retiring a retired sensor changes nothing (204)."""
    async with acquire(pool()) as conn:
        retired = await db.retire(conn, _serial(serial))
    if retired is None:
        raise NotFound(f"no sensor {echo(serial)}", code="sensor_not_found")
    hub().publish([retired])
    return "", 204
