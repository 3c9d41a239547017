"""Test helpers for a secured daemon: a throwaway PKI (trustme) written to PEM files, and gRPC
calls that carry a token and speak TLS, through grpclib and through the official grpcio."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc
import trio
import trustme
from grpclib.client import Channel
from grpclib.exceptions import GRPCError

from droneshield.ingest.proto.status import DeviceStatus, DeviceStatusServiceStub, StatusAck

from .grpc_clients import SEND_STATUS, aio

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate it signed,
    as PEM files (what the daemon's settings and the emitter's flags take)."""

    ca: trustme.CA
    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def client_context(
        self, *, alpn: str | None = "h2", client_cert: bool = False
    ) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file)
        if alpn is not None:
            context.set_alpn_protocols([alpn])
        if client_cert:
            context.load_cert_chain(self.client_cert, self.client_key)
        return context


def make_pki(directory: Path) -> Pki:
    ca = trustme.CA()
    server = ca.issue_cert(HOST, "localhost")
    client = ca.issue_cert("sensor-gateway-1")
    files = {
        "ca.pem": ca.cert_pem.bytes(),
        "server.pem": b"".join(pem.bytes() for pem in server.cert_chain_pems),
        "server.key": server.private_key_pem.bytes(),
        "client.pem": client.cert_chain_pems[0].bytes(),
        "client.key": client.private_key_pem.bytes(),
    }
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return Pki(
        ca,
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
        directory / "client.pem",
        directory / "client.key",
    )


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def send(
    port: int,
    serial: str,
    *,
    metadata: dict[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
) -> StatusAck:
    """One SendStatus over grpclib on a fresh channel."""

    async def call() -> StatusAck:
        channel = Channel(HOST, port, ssl=tls)
        try:
            stub = DeviceStatusServiceStub(channel)
            message = DeviceStatus(serial=serial, software_version="")
            return await stub.send_status(message, metadata=metadata, timeout=10)
        finally:
            channel.close()

    return await aio(call)


async def refused(port: int, serial: str, **kwargs: object) -> GRPCError:
    """The GRPCError a call ends with (the test fails if it succeeds)."""
    try:
        await send(port, serial, **kwargs)  # type: ignore[arg-type]
    except GRPCError as exc:
        return exc
    raise AssertionError("the call was accepted")


async def grpcio_send(
    port: int,
    serial: str,
    *,
    metadata: dict[str, str] | None = None,
    root_certificates: bytes | None = None,
) -> StatusAck:
    """SendStatus through grpcio (blocking, in a worker thread); raises grpc.RpcError."""

    def call() -> StatusAck:
        target = f"{HOST}:{port}"
        if root_certificates is None:
            channel = grpc.insecure_channel(target)
        else:
            creds = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            channel = grpc.secure_channel(target, creds)
        with channel:
            method = channel.unary_unary(
                SEND_STATUS,
                request_serializer=bytes,
                response_deserializer=StatusAck.parse,
            )
            message = DeviceStatus(serial=serial, software_version="")
            return method(message, timeout=10, metadata=tuple((metadata or {}).items()))

    return await trio.to_thread.run_sync(call)
