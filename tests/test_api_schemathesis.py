"""schemathesis against the running daemon's /openapi.json: generated requests, valid and not,
must never get a 5xx nor a response the document does not describe. The daemon has an API key,
as the document says writes need one (a request without it must be refused)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trio

from droneshield.config import Settings
from droneshield.ingest.proto.status import DeviceStatus

from .support.grpc_clients import aio, grpclib_stub
from .support.releases import pdf, upload

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "missing_required_header",
        "unsupported_method",
        "allow_header_conformance",
    ]
)
BUDGET = 30  # seconds for schemathesis' own run
API_KEY = "schemathesis-key"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(api_key=API_KEY)


async def test_schemathesis_finds_no_server_errors_or_schema_violations(
    running, api, sensors, tmp_path
):
    with trio.fail_after(BUDGET + 30):
        # Something in every table, so that responses have content to check.
        api.headers["Authorization"] = f"Bearer {API_KEY}"
        await upload(api, [("v1.0.0.pdf", pdf())])
        async with grpclib_stub(running.grpc_port) as stub:
            await aio(stub.send_status, DeviceStatus(serial=sensors[0], software_version="1.0.0"))
        result = await trio.run_process(
            [
                str(Path(sys.executable).parent / "st"),
                "run",
                f"http://127.0.0.1:{running.http_port}/openapi.json",
                "--checks",
                CHECKS,
                "--header",
                f"Authorization: Bearer {API_KEY}",
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                "40",
                "--max-time",
                str(BUDGET),
                "--seed",
                "20261123",
                "--workers",
                "1",
                "--request-timeout",
                "10",
            ],
            cwd=tmp_path,
            capture_stdout=True,
            stderr=subprocess.STDOUT,
            check=False,
        )
    output = result.stdout.decode(errors="replace")
    print(output)  # shown with -s, or on failure
    assert result.returncode == 0, output[-8000:]
