"""The wire contract: generated code matches proto/status.proto; health and reflection answer."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import trio
from grpclib.client import Channel
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from grpclib.reflection.v1.reflection_grpc import ServerReflectionStub
from grpclib.reflection.v1.reflection_pb2 import ServerReflectionRequest

from .grpc_clients import aio

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
