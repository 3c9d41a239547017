"""The DeviceStatusService handlers. They validate, hand reports to the writer through the bridge,
and translate outcomes to gRPC statuses; they hold no state of their own."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from grpclib import GRPCError, Status
from grpclib.const import Handler

from ..domain import Applied, check_serial
from ..errors import (
    DroneshieldError,
    IngestUnavailable,
    Invalid,
    InvalidReport,
    NotFound,
    Unavailable,
)
from ..reports import Outcome, ack_message, check_version, version_problem
from .proto.status import DeviceStatusServiceBase
from .wire import BatchAck, DeviceStatus, DeviceStatusBatch, Rejection, StatusAck, upb_handlers

BATCH_MAX: Final = 10_000  # statuses per SendStatusBatch call

Checked = tuple[str, str | None, str | None]  # serial, canonical version or None, note
Submit = Callable[[Sequence[Checked]], Awaitable[list[Outcome]]]

# The one place where domain errors (errors.py) become gRPC statuses; the most specific kind
# an error is an instance of decides.
_STATUS_OF: Final[dict[type[DroneshieldError], Status]] = {
    Invalid: Status.INVALID_ARGUMENT,
    NotFound: Status.NOT_FOUND,
    Unavailable: Status.UNAVAILABLE,
}


def _status(error: DroneshieldError) -> Status:
    for kind in type(error).__mro__:
        if kind in _STATUS_OF:
            return _STATUS_OF[kind]
    return Status.INTERNAL


def _check(status: DeviceStatus) -> Checked:
    serial = check_serial(status.serial)
    version, note = check_version(status.software_version)
    return serial, version, note


class DeviceStatusService(DeviceStatusServiceBase):
    def __init__(self, submit: Submit) -> None:
        self._submit = submit

    def __mapping__(self) -> dict[str, Handler]:
        return upb_handlers(super().__mapping__())

    async def send_status(self, message: DeviceStatus) -> StatusAck:
        try:
            checked = _check(message)
        except InvalidReport as exc:
            raise GRPCError(_status(exc), exc.message) from None
        [outcome] = await self._submit([checked])
        if isinstance(outcome, DroneshieldError):
            raise GRPCError(_status(outcome), outcome.message)
        _, version, note = checked
        return StatusAck(message=ack_message(version, note, outcome))

    async def send_status_batch(self, message: DeviceStatusBatch) -> BatchAck:
        """Good reports are committed; the rest are listed in `rejected` by index. A report
        committed without its version is counted as accepted and also listed, with code
        VERSION_NOT_STORED, so gateways learn which sensors run unknown software."""
        if len(message.statuses) > BATCH_MAX:
            raise GRPCError(Status.INVALID_ARGUMENT, f"at most {BATCH_MAX} statuses per batch")
        rejected: list[Rejection] = []
        checked: list[tuple[int, Checked]] = []
        for index, status in enumerate(message.statuses):
            try:
                checked.append((index, _check(status)))
            except InvalidReport as exc:
                rejected.append(Rejection(index=index, code=_status(exc).name, reason=exc.message))
        outcomes = await self._submit([c for _, c in checked]) if checked else []
        unavailable = [o for o in outcomes if isinstance(o, IngestUnavailable)]
        if checked and len(unavailable) == len(outcomes):
            raise GRPCError(Status.UNAVAILABLE, unavailable[0].message)
        accepted = 0
        for (index, (_, version, note)), outcome in zip(checked, outcomes, strict=True):
            if isinstance(outcome, Applied):
                accepted += 1
                problem = version_problem(version, note, outcome)
                if problem is not None:
                    rejected.append(
                        Rejection(index=index, code="VERSION_NOT_STORED", reason=problem)
                    )
            else:
                rejected.append(
                    Rejection(index=index, code=_status(outcome).name, reason=outcome.message)
                )
        rejected.sort(key=lambda r: r.index)
        return BatchAck(accepted=accepted, rejected=rejected)
