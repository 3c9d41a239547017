"""TLS with a throwaway CA over real sockets: gRPC (grpclib, grpcio, mutual TLS, the emitter as
a process), HTTPS and WSS; and no plaintext on a TLS port."""

from __future__ import annotations

import sys

import httpx
import pytest
import trio
from grpclib.exceptions import StreamTerminatedError
from trio_websocket import open_websocket

from droneshield import config, daemon
from emitter.link import client_tls

from .support.processes import eventually, spawn
from .support.releases import pdf, upload
from .support.secure_clients import HOST, Pki, bearer, grpcio_send, make_pki, send

TOKEN = "gr-tls-77a1c3"
API_KEY = "ak-tls-0b9e42"


@pytest.fixture
def pki(tmp_path) -> Pki:
    return make_pki(tmp_path)


@pytest.fixture
async def secured(aio_loop, database_url, settings, pki, nursery) -> daemon.Running:
    """TLS on both ports, the gRPC token and the API key."""
    tls = settings.replace(
        tls_cert=pki.server_cert, tls_key=pki.server_key, grpc_token=TOKEN, api_key=API_KEY
    )
    return await nursery.start(daemon.run, tls, database_url)


async def test_grpclib_and_grpcio_report_over_tls(secured, pki, db, sensors):
    with trio.fail_after(20):
        ack = await send(
            secured.grpc_port, sensors[0], metadata=bearer(TOKEN), tls=pki.client_context()
        )
        official = await grpcio_send(
            secured.grpc_port,
            sensors[1],
            metadata=bearer(TOKEN),
            root_certificates=pki.ca_file.read_bytes(),
        )
        online = await db.fetchval(
            "SELECT count(*) FROM sensor WHERE online AND serial = ANY($1)", sensors[:2]
        )
    assert ack.message.startswith("online")
    assert official.message.startswith("online")
    assert online == 2


async def test_grpc_port_speaks_no_plaintext(secured, db, sensors):
    with trio.fail_after(10), pytest.raises((StreamTerminatedError, ConnectionError)):
        await send(secured.grpc_port, sensors[0], metadata=bearer(TOKEN))
    assert await db.fetchval("SELECT online FROM sensor WHERE serial = $1", sensors[0]) is False


async def test_https_serves_reads_and_keyed_writes(secured, pki):
    url = f"https://{HOST}:{secured.http_port}"
    verify = pki.client_context(alpn=None)
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=url, verify=verify, timeout=10) as api:
            health = await api.get("/healthz")
            anonymous = await upload(api, [("v1.0.0.pdf", pdf())])
            keyed = await upload(
                api, [("v1.0.0.pdf", pdf())], headers={"Authorization": f"Bearer {API_KEY}"}
            )
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{secured.http_port}") as plain:
            with pytest.raises(httpx.TransportError):
                await plain.get("/healthz")
    assert health.status_code == 200
    assert anonymous.status_code == 401
    assert keyed.status_code == 201


async def test_websocket_over_wss_says_hello(secured, pki):
    with trio.fail_after(10):
        async with open_websocket(
            HOST, secured.http_port, "/ws", use_ssl=pki.client_context(alpn=None)
        ) as ws:
            hello = await ws.get_message()
    assert '"type":"hello"' in hello.replace(" ", "")


async def test_mutual_tls_needs_a_client_certificate_from_the_ca(
    aio_loop, database_url, settings, pki, nursery, db, sensors, tmp_path
):
    mutual = settings.replace(
        tls_cert=pki.server_cert, tls_key=pki.server_key, grpc_client_ca=pki.ca_file
    )
    (tmp_path / "other").mkdir()
    stranger = make_pki(tmp_path / "other")
    foreign = pki.client_context()
    foreign.load_cert_chain(stranger.client_cert, stranger.client_key)
    running = await nursery.start(daemon.run, mutual, database_url)
    with trio.fail_after(20):
        ack = await send(running.grpc_port, sensors[0], tls=pki.client_context(client_cert=True))
        for refused in (pki.client_context(), foreign):
            with pytest.raises((StreamTerminatedError, ConnectionError)):
                await send(running.grpc_port, sensors[1], tls=refused)
        online = await db.fetchval("SELECT online FROM sensor WHERE serial = $1", sensors[1])
    assert ack.message.startswith("online")
    assert online is False


async def test_emitter_reports_to_a_secured_daemon(secured, pki, db, sensors, tmp_path):
    serials = tmp_path / "serials.txt"
    serials.write_text(sensors[0] + "\n")
    argv = [
        *(sys.executable, "-m", "emitter", "compat", "--interval", "0.05"),
        *("--serials-file", str(serials), "--target", f"{HOST}:{secured.grpc_port}"),
        *("--ca-file", str(pki.ca_file), "--token", TOKEN),
    ]

    async def online() -> bool:
        return await db.fetchval("SELECT online FROM sensor WHERE serial = $1", sensors[0])

    with trio.fail_after(30):
        async with spawn(argv) as emitter:
            await eventually(online)
            assert await emitter.stop() == 0


def test_tls_settings_come_in_pairs_and_empty_means_unset(tmp_path):
    with pytest.raises(ValueError, match="together"):
        config.from_mapping({}, {"DRONESHIELD_TLS_CERT": str(tmp_path / "cert.pem")})
    with pytest.raises(ValueError, match="mTLS"):
        config.from_mapping({}, {"DRONESHIELD_GRPC_CLIENT_CA": str(tmp_path / "ca.pem")})
    unset = config.from_mapping({}, {"DRONESHIELD_TLS_CERT": "", "DRONESHIELD_TLS_KEY": ""})
    assert unset.tls_files is None


def test_emitter_refuses_a_client_certificate_without_a_ca(pki):
    with pytest.raises(ValueError, match="--ca-file"):
        client_tls(None, pki.client_cert, pki.client_key)
    assert client_tls(None) is None


async def test_a_missing_certificate_fails_the_start(
    aio_loop, database_url, settings, pki, nursery
):
    broken = settings.replace(
        tls_cert=pki.server_cert.with_name("absent.pem"), tls_key=pki.server_key
    )
    with trio.fail_after(20), pytest.RaisesGroup(FileNotFoundError, flatten_subgroups=True):
        await nursery.start(daemon.run, broken, database_url)
