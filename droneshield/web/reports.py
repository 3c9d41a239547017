"""`POST /reports`: sensor reports from devices that cannot speak gRPC, as JSON.

The same reports as `SendStatusBatch`: validated by the same rules, committed by the same
writer on the same queue and deadline, answered only after the commit with the same per-item
outcomes (`ingest.service.submit_batch`), and guarded by the same bearer token (`grpc_token`).
"""

from __future__ import annotations

from typing import Final

import orjson
from pydantic import Field, ValidationError
from quart import Blueprint
from quart_schema import document_request, validate_response

from ..errors import Invalid
from ..ingest.service import BATCH_MAX, submit_batch
from .auth import requires_report_token
from .bodies import read_within
from .context import submit
from .schema import ApiModel, errors

BODY_MAX: Final = 4 * 1024 * 1024  # bytes; 10,000 reports of a 128-character serial fit thrice

blueprint = Blueprint("reports", __name__)


class Report(ApiModel):
    serial: str = Field(description="1 to 128 printable ASCII characters")
    software_version: str = Field(
        default="",
        description="semver, a leading `v` accepted, at most 128 characters (longer, as "
        "malformed: committed, version not stored); empty: none reported",
    )


class Reports(ApiModel):
    reports: list[Report] = Field(max_length=BATCH_MAX)


class Rejected(ApiModel):
    index: int = Field(description="position in `reports`")
    code: str = Field(
        description="INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE (retry it), or VERSION_NOT_STORED "
        "(committed, counted as accepted, version not stored)"
    )
    reason: str


class ReportsAck(ApiModel):
    """What became of each report, as gRPC's `BatchAck` says it."""

    accepted: int = Field(description="reports committed (the sensor is online)")
    rejected: list[Rejected]


def _parse(body: bytes) -> Reports:
    """Raises: Invalid (400) for a body that is not `{"reports": [{"serial", …}, …]}`."""
    try:
        return Reports.model_validate(orjson.loads(body))
    except orjson.JSONDecodeError as exc:
        raise Invalid(f"the body is not JSON: {exc}", code="invalid_json") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise Invalid(problems, code="invalid_body") from None


@blueprint.post("/reports")
@document_request(Reports)
@validate_response(ReportsAck)
@errors(400, 401, 413, 503)
@requires_report_token
async def post_reports() -> ReportsAck:
    """Record up to 10,000 sensor reports; answered once they are committed.

    A report that cannot be taken (bad serial, unknown sensor) is listed in `rejected` by its
    index while the others are committed; 503 when none could be committed before the
    deadline (database down, shutting down): retry the request.
    """
    reports = _parse(await read_within(BODY_MAX))
    ack = await submit_batch(submit(), [(r.serial, r.software_version) for r in reports.reports])
    return ReportsAck(
        accepted=ack.accepted,
        rejected=[Rejected(index=r.index, code=r.code, reason=r.reason) for r in ack.rejected],
    )
