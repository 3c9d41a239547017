"""Secrets never reach the log: a real daemon process at DEBUG, given an API key, a gRPC token
and a database password, is driven through good and refused calls, and a daemon that cannot
reach its database fails without printing the password."""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import pytest
import trio

from droneshield import logs
from droneshield.config import Settings

from .support.live_client import open_live
from .support.nats_server import missing, private_nats
from .support.processes import free_port, spawn
from .support.releases import pdf, upload
from .support.secure_clients import HOST, bearer, refused, send

API_KEY = "apikey-3c9d0f7e5b"
TOKEN = "grpctoken-8e2a6b14d0"
PASSWORD = "pw-Zq7xK2v9"
NATS_PASSWORD = "natspw-J4m8Rw2c"
SECRETS = (API_KEY, TOKEN, PASSWORD, NATS_PASSWORD)


def _with_password(url: str, password: str) -> str:
    """`url` with `password` in its user part (the test server trusts local connections, so it
    is never checked, only carried: exactly what must not leak)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or 'postgres'}:{password}@{host}"))


def _serve(tmp_path: Path, url: str, *flags: str) -> list[str]:
    return [
        *(sys.executable, "-m", "droneshield", "serve", "--log-level", "DEBUG"),
        *("--data-dir", str(tmp_path), "--database-url", url, *flags),
    ]


def _leaks(lines: list[str]) -> list[str]:
    return [line for line in lines if any(secret in line for secret in SECRETS)]


async def test_a_debug_run_logs_no_secret(database_url, db, sensors, tmp_path):
    http_port, grpc_port = free_port(), free_port()
    argv = _serve(
        tmp_path,
        _with_password(database_url, PASSWORD),
        *("--http-port", str(http_port), "--grpc-port", str(grpc_port)),
        *("--api-key", API_KEY, "--grpc-token", TOKEN),
    )
    with trio.fail_after(60):
        async with spawn(argv) as daemon:
            await daemon.wait_for("droneshield ready")
            await send(grpc_port, sensors[0], metadata=bearer(TOKEN))
            await refused(grpc_port, sensors[1])
            await refused(grpc_port, sensors[1], metadata=bearer(API_KEY))  # the wrong secret
            async with httpx.AsyncClient(base_url=f"http://{HOST}:{http_port}") as api:
                keyed = {"Authorization": f"Bearer {API_KEY}"}
                assert (await upload(api, [("v1.0.0.pdf", pdf())], headers=keyed)).is_success
                wrong = {"Authorization": f"Bearer {TOKEN}"}
                assert (
                    await upload(api, [("v1.0.1.pdf", pdf())], headers=wrong)
                ).status_code == 401
            async with open_live(http_port) as live:
                await live.subscribe([sensors[0]])
            assert await daemon.stop() == 0
    assert any(" DEBUG " in line for line in daemon.lines), "the run logged nothing at DEBUG"
    assert not _leaks(daemon.lines), "\n".join(_leaks(daemon.lines))


async def test_a_debug_run_relaying_over_nats_logs_no_nats_password(
    database_url, sensors, tmp_path
):
    if (reason := missing()) is not None:
        pytest.skip(reason)
    with trio.fail_after(60):
        async with private_nats("--user", "relay", "--pass", NATS_PASSWORD) as nats:
            relay_url = nats.url.replace("nats://", f"nats://relay:{NATS_PASSWORD}@")
            grpc_port = free_port()
            argv = _serve(
                tmp_path,
                database_url,
                *("--http-port", "0", "--grpc-port", str(grpc_port), "--relay-url", relay_url),
            )
            async with spawn(argv) as daemon:
                await daemon.wait_for("droneshield ready")  # the relay's stream is reached
                await send(grpc_port, sensors[0])
                await nats.kill()  # the relay reconnects, saying so
                await daemon.wait_for("NATS: ")
                assert await daemon.stop() == 0
    assert not _leaks(daemon.lines), "\n".join(_leaks(daemon.lines))


async def test_a_failing_database_connection_does_not_print_the_password(server_url, tmp_path):
    unreachable = f"postgresql://droneshield:{PASSWORD}@{HOST}:{free_port()}/droneshield"
    missing = _with_password(server_url, PASSWORD).replace(urlsplit(server_url).path, "/nowhere")
    with trio.fail_after(60):
        for url in (unreachable, missing):
            ports = ("--http-port", "0", "--grpc-port", "0")
            async with spawn(_serve(tmp_path, url, *ports)) as daemon:
                assert await daemon.exited() == 1
                await daemon.wait_for("droneshield serve failed")
            assert not _leaks(daemon.lines), "\n".join(_leaks(daemon.lines))


def test_redaction_masks_secrets_in_messages_arguments_and_tracebacks():
    settings = Settings(
        database_url=f"postgresql://u:{quote(PASSWORD)}@db/x", api_key=API_KEY, grpc_token=TOKEN
    )
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("droneshield.test_redaction")
    logger.addHandler(handler)
    try:
        logs.install(logs.secrets_of(settings), [logger])
        logger.warning("key %s and token %r", API_KEY, TOKEN)
        try:
            raise ConnectionError(f"cannot connect to {settings.database_url}")
        except ConnectionError:
            logger.exception("database")
    finally:
        logger.removeHandler(handler)
    written = stream.getvalue()
    assert "ConnectionError: cannot connect to postgresql://u:***@db/x" in written
    assert not [secret for secret in SECRETS if secret in written]


@pytest.mark.parametrize(
    ("relay_url", "shown"),
    [
        (f"nats://relay:{quote(NATS_PASSWORD)}@nats:4222", "nats://relay:***@nats:4222"),
        (f"tls://{NATS_PASSWORD}@nats:4222", "tls://***@nats:4222"),  # a token alone
        ("nats://nats:4222", "nats://nats:4222"),
    ],
)
def test_the_relays_nats_credentials_are_masked(relay_url, shown):
    secrets = logs.secrets_of(Settings(relay_url=relay_url))
    assert logs.mask(f"cannot reach {relay_url}", secrets) == f"cannot reach {shown}"
