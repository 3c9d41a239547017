"""The gRPC server's codec: protobuf, with a size limit and a strict parse of what arrives.

grpclib has no maximum message size of its own, and betterproto2's pure-Python parser is
lenient: it reads most random or truncated bytes as a message with whatever fields it found
(measured: ~90 % of random inputs "parse"), puts an int into a string field that arrives with
a varint's wire type, and fails on the rest with assorted exceptions (`EOFError`, `KeyError`,
`UnicodeDecodeError`…) that grpclib would answer with UNKNOWN. So every request is first parsed
by protobuf's C parser (upb) against the same descriptor, which rejects truncated messages and
invalid UTF-8 in strings, and then checked for known fields sent with the wrong wire type (upb
keeps those as unknown fields). Measured: ~1 % of the betterproto2 parse that follows (1.7 ms
against 171 ms for 10,000 statuses; 2 µs for one status, against ~1 ms per unary call).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from google.protobuf import message_factory
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet
from grpclib import GRPCError, Status
from grpclib.encoding.proto import ProtoCodec


@cache
def _strict_parser(message_type: type[Any]) -> Any:
    """protobuf's own class for the message betterproto2 (or protobuf) generated."""
    return message_factory.GetMessageClass(message_type.DESCRIPTOR).FromString


def _has_unknown_fields(message: Message) -> bool:
    size = message.ByteSize()
    message.DiscardUnknownFields()  # recursive, in C: the common case stays cheap
    return message.ByteSize() != size


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


def check_wire_format(data: bytes, message_type: type[Any]) -> None:
    """Raises:
    DecodeError: `data` is not a well-formed `message_type`.
    """
    parse = _strict_parser(message_type)
    if _has_unknown_fields(parse(data)):
        _check_wire_types(parse(data))


class BoundedCodec(ProtoCodec):
    """ProtoCodec that refuses requests over `max_bytes` (RESOURCE_EXHAUSTED) and malformed
    ones (INVALID_ARGUMENT), as the official gRPC servers do.

    The limit applies once grpclib has the whole message: grpclib reads a message's declared
    length in full before decoding it, and offers no hook to refuse it from its prefix.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def decode(self, data: bytes, message_type: Any) -> Any:
        if len(data) > self.max_bytes:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                f"request of {len(data)} bytes exceeds the limit of {self.max_bytes}",
            )
        try:
            check_wire_format(data, message_type)
        except DecodeError as exc:
            raise GRPCError(Status.INVALID_ARGUMENT, f"malformed request: {exc}") from None
        return message_type.FromString(data)
