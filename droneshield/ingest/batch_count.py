"""The number of statuses in a SendStatusBatch request, counted before it is parsed.

`BATCH_MAX` is checked by the handler, once protobuf has built the message; by then a 4 MB
request of 2 million empty statuses (2 bytes each on the wire) has cost ~130 MB of message
objects, and a request of 2 million unknown fields ~220 MB and over a second of the event loop
(the codec looks at unknown fields one Python object each). Each status is one
length-delimited field 1 at the top level, so walking the top-level tags and lengths counts
them without building anything. Every tag is walked, whatever its field: a count that stopped
at the first field it did not know would leave a batch that starts with one to the parser
whole. Fields other than statuses are skipped by their wire type and limited too
(`OTHER_FIELDS_MAX`), so the walk ends after at most `limit + OTHER_FIELDS_MAX` tags whatever
the request holds. Framing the parser would refuse anyway (a varint or a length running past
the end, an unknown wire type, an unmatched group) is refused here.

The walk costs about what protobuf's C parser takes for the same batch (~0.5 µs a status here),
so it runs only for requests long enough to hold more than the limit (a status takes at least
2 bytes): up to ~700 statuses of typical size, a batch is not walked at all; a full one pays
~5 ms, next to the ~350 ms its commit takes.
"""

from __future__ import annotations

from typing import Final

from grpclib import GRPCError, Status

# Fields besides statuses a batch may carry, counted at any depth of a group: room for what a
# newer client adds to the message, far under what makes their parse costly.
OTHER_FIELDS_MAX: Final = 1_000

_STATUSES_TAG: Final = 0x0A  # field 1, wire type 2 (length-delimited)
_MIN_STATUS_BYTES: Final = 2  # an empty status: its tag and a zero length
_VARINT_MAX_BYTES: Final = 10
_FIXED_BYTES: Final = {1: 8, 5: 4}  # wire type → bytes (fixed64, fixed32)
_VARINT, _LENGTH, _GROUP_START, _GROUP_END = 0, 2, 3, 4  # the other wire types


def _malformed(why: str) -> GRPCError:
    """The codec's words for a request protobuf cannot read."""
    return GRPCError(Status.INVALID_ARGUMENT, f"malformed request: {why}")


def _varint(data: bytes, index: int) -> tuple[int, int]:
    """The varint at `index` and the index after it.

    Raises:
        GRPCError: INVALID_ARGUMENT for a varint cut short or longer than 10 bytes.
    """
    value, shift, end = 0, 0, min(len(data), index + _VARINT_MAX_BYTES)
    while index < end:
        byte = data[index]
        value |= (byte & 0x7F) << shift
        index += 1
        if not byte & 0x80:
            return value, index
        shift += 7
    raise _malformed("a varint runs past the end of the message")


def _skip(data: bytes, index: int, wire_type: int) -> int:
    """The index after the value of a field of `wire_type` starting at `index` (a group's start
    and end tags have none).

    Raises:
        GRPCError: INVALID_ARGUMENT for a value past the end or a wire type protobuf has not.
    """
    if wire_type == _VARINT:
        return _varint(data, index)[1]
    if wire_type == _LENGTH:
        length, index = _varint(data, index)
        index += length
    elif wire_type in _FIXED_BYTES:
        index += _FIXED_BYTES[wire_type]
    elif wire_type not in (_GROUP_START, _GROUP_END):
        raise _malformed(f"wire type {wire_type} does not exist")
    if index > len(data):
        raise _malformed("a field runs past the end of the message")
    return index


def check_batch_count(data: bytes, limit: int) -> None:
    """Raises:
    GRPCError: INVALID_ARGUMENT once `data` is seen to hold more than `limit` statuses or more
        than OTHER_FIELDS_MAX other fields, or framing protobuf would refuse. Anything else
        (wrong wire types for known fields, invalid UTF-8, the statuses' insides) is left to
        the parser to judge.
    """
    index, size, statuses, others = 0, len(data), 0, 0
    if size <= _MIN_STATUS_BYTES * limit:
        return
    groups: list[int] = []  # field numbers of the groups the walk is inside
    while index < size:
        if data[index] == _STATUSES_TAG:  # the common case: skip decoding a varint
            key, index = _STATUSES_TAG, index + 1
        else:
            key, index = _varint(data, index)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise _malformed("field number 0")
        index = _skip(data, index, wire_type)
        if key == _STATUSES_TAG and not groups:
            statuses += 1
            if statuses > limit:
                raise GRPCError(Status.INVALID_ARGUMENT, f"more than {limit} statuses in the batch")
            continue
        if wire_type == _GROUP_START:
            groups.append(number)
        elif wire_type == _GROUP_END and (not groups or groups.pop() != number):
            raise _malformed("a group ends that did not start")
        others += 1
        if others > OTHER_FIELDS_MAX:
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"more than {OTHER_FIELDS_MAX} fields besides statuses in the batch",
            )
    if groups:
        raise _malformed("a group runs past the end of the message")
