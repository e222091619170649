"""TLS and mutual TLS for the gRPC port, from PEM files.

``tls_cert_file`` (the certificate chain, leaf first) and ``tls_key_file``
turn TLS on; ``tls_client_ca_file`` turns on mutual TLS: a client must then
present a certificate signed by that CA, or the handshake fails before any
RPC. Files are read once at start-up; a missing or unreadable one stops the
gateway with an error naming the setting.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from gateway.settings import Settings


def _read(setting: str, path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{setting}: cannot read {path}: {exc.strerror}") from exc
    if b"-----BEGIN " not in data:
        raise ValueError(f"{setting}: {path} is not a PEM file")
    return data


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """Credentials for ``add_secure_port``, or None when TLS is off."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    chain = _read("tls_cert_file", settings.tls_cert_file)
    key = _read("tls_key_file", settings.tls_key_file)
    client_ca = (
        _read("tls_client_ca_file", settings.tls_client_ca_file)
        if settings.tls_client_ca_file is not None
        else None
    )
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )
