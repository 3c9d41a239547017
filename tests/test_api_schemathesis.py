"""schemathesis against the running daemon's /openapi.json: generated requests, valid and not,
must never get a 5xx nor a response the document does not describe. The daemon has an API key,
as the document says writes need one (a request without it must be refused)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from droneshield.config import Settings

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
# Its defaults, and 411 and 413: a body refused for its size (or for not saying it) before it
# is read is rejected as surely as one refused for what it holds (10,001 reports are 413).
REJECTED = [
    "400",
    "401",
    "403",
    "404",
    "405",
    "406",
    "409",
    "411",
    "413",
    "415",
    "422",
    "428",
    "429",
    "5xx",
]
CONFIG = f"[checks.negative_data_rejection]\nexpected-statuses = {json.dumps(REJECTED)}\n"
API_KEY = "schemathesis-key"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The report token alike, so one header opens every write the document marks as needing one.
    return settings.replace(api_key=API_KEY, grpc_token=API_KEY)


async def test_schemathesis_finds_no_server_errors_or_schema_violations(
    running, api, sensors, tmp_path
):
    with trio.fail_after(BUDGET + 30):
        # Something in every table, so that responses have content to check.
        api.headers["Authorization"] = f"Bearer {API_KEY}"
        await upload(api, [("v1.0.0.pdf", pdf())])
        report = {"serial": sensors[0], "softwareVersion": "1.0.0"}
        assert (await api.post("/reports", json={"reports": [report]})).status_code == 200
        (tmp_path / "schemathesis.toml").write_text(CONFIG)
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
