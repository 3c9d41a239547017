"""The gRPC server's codec: protobuf, with a strict parse of what arrives.

A lenient parser reads most random or truncated bytes as a message with whatever fields it
found (betterproto2's pure-Python one "parses" ~90 % of random inputs, puts an int into a
string field that arrives with a varint's wire type, and fails on the rest with assorted
exceptions that grpclib answers with UNKNOWN).
So every request is parsed by protobuf's C parser (upb), which rejects truncated messages and
invalid UTF-8 in strings, and checked for known fields sent with the wrong wire type (upb keeps
those as unknown fields; looking costs ~1 % of a parse, and only when unknown fields exist).
"""

from __future__ import annotations

from functools import cache
from typing import Any, Final

from google.protobuf import message_factory
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet
from grpclib import GRPCError, Status
from grpclib.encoding.proto import ProtoCodec


@cache
def _strict_parser(message_type: Any) -> Any:
    """protobuf's own class for the message betterproto2 (or protobuf) generated."""
    return message_factory.GetMessageClass(message_type.DESCRIPTOR).FromString


# Bytes of fields this server does not know that a request may carry. A newer client's extra
# fields are a few bytes a status; looking at them one by one (`_check_wire_types`) builds a
# Python object each, so 4 MB of them (two million) took ~1.2 s of the event loop and 220 MB.
UNKNOWN_BYTES_MAX: Final = 64 * 1024


def _unknown_bytes(message: Message) -> int:
    size: int = message.ByteSize()
    message.DiscardUnknownFields()  # recursive, in C: the common case stays cheap
    return size - int(message.ByteSize())


def _check_wire_types(message: Message) -> None:
    """Raises:
    DecodeError: a known field arrived with another wire type (at any depth).
    """
    known = {f.number for f in message.DESCRIPTOR.fields}
    for unknown in UnknownFieldSet(message):
        if unknown.field_number in known:
            raise DecodeError(f"field {unknown.field_number} has the wrong wire type")
    for field, value in message.ListFields():
        if field.message_type is not None:
            for item in value if field.is_repeated else [value]:
                _check_wire_types(item)


def strict_parse(data: bytes, message_type: type) -> Message:
    """`data` parsed by protobuf's C parser as `message_type` (a protobuf instance of it; the
    same class when `message_type` is one already), without its unknown fields.

    Raises:
        DecodeError: `data` is not a well-formed `message_type`.
    """
    parse = _strict_parser(message_type)
    message = parse(data)
    unknown = _unknown_bytes(message)
    if unknown > UNKNOWN_BYTES_MAX:
        raise DecodeError(
            f"{unknown:,} bytes of fields this server does not know; at most {UNKNOWN_BYTES_MAX:,}"
        )
    if unknown:
        _check_wire_types(parse(data))
    return message


class StrictCodec(ProtoCodec):
    """ProtoCodec that answers malformed requests INVALID_ARGUMENT, as the official gRPC
    servers do. (Their size is limited before they are read: `limits.size_limited`.)"""

    def decode(self, data: bytes, message_type: Any) -> Any:
        try:
            message = strict_parse(data, message_type)
        except DecodeError as exc:
            raise GRPCError(Status.INVALID_ARGUMENT, f"malformed request: {exc}") from None
        # The ingest methods take protobuf's classes (`wire`): parsed once. Others (health,
        # reflection) are protobuf's too; a betterproto2 type would be parsed by its own class.
        return message if isinstance(message, message_type) else message_type.FromString(data)
