"""The wire contract: generated code matches proto/status.proto; health and reflection answer."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import trio
from google.protobuf.internal import api_implementation
from google.protobuf.message import Message as ProtobufMessage
from grpclib.client import Channel
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from grpclib.reflection.v1.reflection_grpc import ServerReflectionStub
from grpclib.reflection.v1.reflection_pb2 import ServerReflectionRequest
from hypothesis import given, settings
from hypothesis import strategies as st

from droneshield.ingest import wire
from droneshield.ingest.proto import status
from droneshield.ingest.service import DeviceStatusService

from .support.grpc_clients import aio

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ROOT / "droneshield" / "ingest" / "proto"


def test_generated_code_is_up_to_date_with_the_proto(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'proto'}",
            f"--python_betterproto2_out={tmp_path}",
            "--python_betterproto2_opt=client_generation=async",
            "--python_betterproto2_opt=server_generation=async",
            "--python_betterproto2_opt=google_protobuf_descriptors",
            str(ROOT / "proto" / "status.proto"),
        ],
        check=True,
        capture_output=True,
    )
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py"))
    committed = sorted(p.relative_to(GENERATED) for p in GENERATED.rglob("*.py"))
    assert fresh == committed
    stale = [str(p) for p in fresh if not filecmp.cmp(tmp_path / p, GENERATED / p, shallow=False)]
    assert not stale, f"run `just proto`: {stale} differ from proto/status.proto"


async def test_health_service_reports_serving(running):
    async def check() -> int:
        channel = Channel("127.0.0.1", running.grpc_port)
        try:
            stub = HealthStub(channel)
            overall = await stub.Check(HealthCheckRequest(service=""))
            ours = await stub.Check(HealthCheckRequest(service="status.DeviceStatusService"))
            return overall.status, ours.status
        finally:
            channel.close()

    with trio.fail_after(10):
        assert await aio(check) == (HealthCheckResponse.SERVING, HealthCheckResponse.SERVING)


async def test_reflection_lists_and_describes_the_service(running):
    async def reflect() -> tuple[list[str], bytes]:
        channel = Channel("127.0.0.1", running.grpc_port)
        try:
            stub = ServerReflectionStub(channel)
            async with stub.ServerReflectionInfo.open() as stream:
                await stream.send_message(ServerReflectionRequest(list_services=""))
                listed = await stream.recv_message()
                await stream.send_message(
                    ServerReflectionRequest(file_containing_symbol="status.DeviceStatusService"),
                    end=True,
                )
                described = await stream.recv_message()
            names = [s.name for s in listed.list_services_response.service]
            return names, described.file_descriptor_response.file_descriptor_proto[0]
        finally:
            channel.close()

    with trio.fail_after(10):
        names, descriptor = await aio(reflect)
    assert "status.DeviceStatusService" in names
    assert "grpc.health.v1.Health" in names
    assert b"SendStatusBatch" in descriptor


async def _never_submitted(reports: object) -> list[object]:  # pragma: no cover
    raise AssertionError("only the service's method table is read")


def test_ingest_requests_and_acks_go_through_protobufs_c_parser():
    """betterproto2's pure-Python parser cost ~30 ms per 500-status batch; the service hands
    grpclib protobuf's upb classes of the same messages instead."""
    assert api_implementation.Type() == "upb"
    mapping = DeviceStatusService(_never_submitted).__mapping__()
    assert set(mapping) == {
        "/status.DeviceStatusService/SendStatus",
        "/status.DeviceStatusService/SendStatusBatch",
    }
    for handler in mapping.values():
        for kind in (handler.request_type, handler.reply_type):
            assert issubclass(kind, ProtobufMessage)
            assert kind.DESCRIPTOR.file.name == "status.proto"


_text = st.text(max_size=40)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(_text, _text), max_size=20), st.lists(st.tuples(_text, _text)))
def test_upb_and_betterproto2_read_each_others_bytes(statuses, rejected):
    """Clients built on betterproto2 (ours, the emitter) and the server's upb classes agree on
    every byte of the contract, both ways."""
    sent = status.DeviceStatusBatch(
        statuses=[status.DeviceStatus(serial=s, software_version=v) for s, v in statuses]
    )
    parsed = wire.DeviceStatusBatch.FromString(bytes(sent))
    assert [(s.serial, s.software_version) for s in parsed.statuses] == statuses
    ack = wire.BatchAck(
        accepted=len(statuses),
        rejected=[wire.Rejection(index=i, code=c, reason=r) for i, (c, r) in enumerate(rejected)],
    )
    read = status.BatchAck.FromString(ack.SerializeToString())
    assert read.accepted == len(statuses)
    assert [(r.index, r.code, r.reason) for r in read.rejected] == [
        (i, c, r) for i, (c, r) in enumerate(rejected)
    ]
