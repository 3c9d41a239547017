"""The gRPC server's TLS context, from the certificate settings."""

from __future__ import annotations

import ssl

from ..config import Settings


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """TLS for gRPC when `tls_cert`/`tls_key` are set (None: plaintext), requiring client
    certificates signed by `grpc_client_ca` when that is set too.

    Raises:
        OSError, ssl.SSLError: a file is missing or not a matching PEM certificate/key, so a
        misconfigured daemon fails at start instead of at its first client.
    """
    if settings.tls_files is None:
        return None
    # Purpose.CLIENT_AUTH: a server-side context with the default's safe protocol floor (TLS 1.2).
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*settings.tls_files)
    # gRPC is HTTP/2 only, and grpcio's client refuses a server that does not negotiate h2.
    context.set_alpn_protocols(["h2"])
    if settings.grpc_client_ca is not None:
        context.load_verify_locations(settings.grpc_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context
