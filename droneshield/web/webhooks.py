"""`/webhooks`: subscriptions to fleet events, their delivery health and recent deliveries.

Writes need the API key. A secret is write-only: it signs every POST and is never returned or
logged. Targets are checked against db-independent rules (targets.py) when created and again
before every delivery.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from pydantic import Field, field_validator
from quart import Blueprint, request
from quart_schema import validate_querystring, validate_request, validate_response

from .. import human
from ..db import webhooks as db
from ..db.pool import acquire
from ..errors import Invalid, LengthRequired, NotFound, TooLarge
from ..provisioning import check_site
from ..targets import parse, resolve
from ..webhooks import EVENTS, TEST_EVENT
from .auth import requires_key
from .context import events_queued, pool, settings
from .schema import ApiInput, ApiModel, errors

blueprint = Blueprint("webhooks", __name__)
# A webhook id is a bigint: larger numbers name no webhook (404), never a database error.
ONE: Final = "/webhooks/<int(max=9223372036854775807):webhook_id>"

BODY_MAX: Final = 64 * 1024  # bytes of a webhook's JSON description
DELIVERIES_LIMIT_MAX: Final = 500


class WebhookFilter(ApiInput):
    site: str | None = Field(
        default=None,
        description="only this site's sensors; with fleet.online_below, this site's online share",
    )
    serials: list[str] | None = Field(
        default=None, min_length=1, max_length=10000, description="only these sensors"
    )

    @field_validator("site")
    @classmethod
    def site_is_a_site_name(cls, site: str | None) -> str | None:
        # A site no sensor has yet is accepted: its sensors may be provisioned later.
        return None if site is None else check_site(site)


class WebhookIn(ApiInput):
    url: str = Field(max_length=2048, description="http(s) URL receiving signed POSTs")
    events: list[str] = Field(min_length=1, description=f"any of {', '.join(EVENTS)}")
    secret: str = Field(
        min_length=16, max_length=256, description="HMAC key of X-Droneshield-Signature"
    )
    filter: WebhookFilter = Field(default_factory=WebhookFilter)
    online_below: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="fleet.online_below fires when the online share (of the fleet, or of "
        "filter.site) drops under this (0 to 1)",
    )

    @field_validator("events")
    @classmethod
    def known_events(cls, events: list[str]) -> list[str]:
        unknown = sorted(set(events) - set(EVENTS))
        if unknown:
            raise ValueError(f"unknown events {unknown}; known: {list(EVENTS)}")
        return sorted(set(events), key=EVENTS.index)


class WebhookOut(ApiModel):
    """A webhook (never its secret) with its delivery health."""

    id: int
    url: str
    events: list[str]
    filter: WebhookFilter
    online_below: float | None
    created_at: datetime
    health: str = Field(description="ok | retrying | failing (events given up recently)")
    pending: int = Field(description="events not delivered yet")
    oldest_pending_at: datetime | None
    failed: int = Field(description="events given up after retries (kept for retention)")
    failures: int = Field(description="consecutive failed POSTs")
    last_error: str | None
    last_delivered_at: datetime | None
    next_attempt_at: datetime | None = Field(description="set while backing off")


class WebhookList(ApiModel):
    items: list[WebhookOut]


class DeliveryOut(ApiModel):
    event_id: str
    type: str
    occurred_at: datetime
    status: str = Field(description="pending | delivered | failed")
    attempts: int
    last_error: str | None
    done_at: datetime | None


class DeliveryList(ApiModel):
    """The webhook's most recent events, newest first."""

    items: list[DeliveryOut]


class DeliveriesQuery(ApiModel):
    limit: int = Field(default=100, ge=1, le=DELIVERIES_LIMIT_MAX)


class TestQueued(ApiModel):
    event_id: str = Field(description=f"a `{TEST_EVENT}` event, delivered like any other")


def _out(w: db.Webhook) -> WebhookOut:
    health = "failing" if w.failed else "retrying" if w.failures else "ok"
    return WebhookOut(
        id=w.id,
        url=w.url,
        events=w.events,
        filter=WebhookFilter(site=w.site, serials=w.serials),
        online_below=w.online_below,
        created_at=w.created_at,
        health=health,
        pending=w.pending,
        oldest_pending_at=w.oldest_pending_at,
        failed=w.failed,
        failures=w.failures,
        last_error=w.last_error,
        last_delivered_at=w.last_delivered_at,
        next_attempt_at=w.next_attempt_at if w.failures else None,
    )


def _not_found(webhook_id: int) -> NotFound:
    return NotFound(f"no webhook {webhook_id}", code="webhook_not_found")


@blueprint.post("/webhooks")
@requires_key
@validate_request(WebhookIn)
@validate_response(WebhookOut, 201)
@errors(400, 401, 413)
async def create_webhook(data: WebhookIn) -> tuple[WebhookOut, int]:
    """Subscribe a URL to events. Its host must resolve to public addresses only (unless
    allowed by `DRONESHIELD_WEBHOOK_ALLOW_HOSTS`); it is stored as it is sent to, an
    internationalised name in its IDNA form (`xn--…`)."""
    if "fleet.online_below" in data.events and data.online_below is None:
        raise Invalid("fleet.online_below needs onlineBelow (0 to 1)", code="threshold_missing")
    target = parse(data.url)
    await resolve(target, settings().webhook_targets)
    async with acquire(pool()) as conn:
        created = await db.create(
            conn,
            url=target.url,
            events=data.events,
            secret=data.secret,
            site=data.filter.site,
            serials=data.filter.serials,
            online_below=data.online_below,
        )
    return _out(created), 201


@blueprint.before_request
async def bounded_body() -> None:
    """Raises:
    LengthRequired: a body without Content-Length (chunked), which the request's schema
        validation would read up to the app's limit for uploads.
    TooLarge: a body announced over BODY_MAX."""
    if request.content_length is None:
        if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
            raise LengthRequired(
                f"send a webhook's description with its Content-Length (at most "
                f"{human.size(BODY_MAX)})"
            )
        return
    if request.content_length > BODY_MAX:
        raise TooLarge(
            f"a webhook's description is limited to {human.size(BODY_MAX)}",
            code="request_too_large",
        )


@blueprint.get("/webhooks")
@validate_response(WebhookList)
@errors()
async def list_webhooks() -> WebhookList:
    """Every webhook with its delivery health."""
    async with acquire(pool()) as conn:
        return WebhookList(items=[_out(w) for w in await db.list_all(conn)])


@blueprint.get(ONE)
@validate_response(WebhookOut)
@errors(404)
async def get_webhook(webhook_id: int) -> WebhookOut:
    async with acquire(pool()) as conn:
        found = await db.get(conn, webhook_id)
    if found is None:
        raise _not_found(webhook_id)
    return _out(found)


@blueprint.delete(ONE)
@requires_key
@errors(401, 404)
async def delete_webhook(webhook_id: int) -> tuple[str, int]:
    """Remove a webhook; its undelivered events are dropped with it."""
    async with acquire(pool()) as conn:
        if not await db.delete(conn, webhook_id):
            raise _not_found(webhook_id)
    return "", 204


@blueprint.get(ONE + "/deliveries")
@validate_querystring(DeliveriesQuery)
@validate_response(DeliveryList)
@errors(400, 404)
async def list_deliveries(webhook_id: int, query_args: DeliveriesQuery) -> DeliveryList:
    """Recent events of this webhook: status, attempts, last error."""
    async with acquire(pool()) as conn:
        if await db.get(conn, webhook_id) is None:
            raise _not_found(webhook_id)
        rows = await db.deliveries(conn, webhook_id, query_args.limit)
    return DeliveryList(
        items=[
            DeliveryOut(
                event_id=str(d.id),
                type=d.type,
                occurred_at=d.occurred_at,
                status=d.state,
                attempts=d.attempts,
                last_error=d.last_error,
                done_at=d.done_at,
            )
            for d in rows
        ]
    )


@blueprint.post(ONE + "/test")
@requires_key
@validate_response(TestQueued, 202)
@errors(401, 404)
async def test_webhook(webhook_id: int) -> tuple[TestQueued, int]:
    """Queue a test event for this webhook (delivered, signed and retried like any other)."""
    async with acquire(pool()) as conn:
        event_id = await db.enqueue_test(conn, webhook_id)
    if event_id is None:
        raise _not_found(webhook_id)
    events_queued()
    return TestQueued(event_id=str(event_id)), 202
