"""Gateway configuration: one frozen dataclass, read from the environment in
exactly one place (``Settings.from_env``) and overridden by CLI flags."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

ENV_PREFIX = "ELIG_"


@dataclass(frozen=True)
class Settings:
    # Redis holding the published snapshots; None = the embedded default: a
    # private redis-server loaded with the sample data set.
    redis_url: str | None = None
    prefix: str = "elig"
    host: str = "0.0.0.0"
    port: int = 50051
    # Policy switches (SPEC §4).
    check_registered_at_institution: bool = True
    emergency_covers_terminated: bool = True
    # Limits.
    max_lines_per_claim: int = 1000
    max_message_bytes: int = 4 * 1024 * 1024
    # How often to look for a new snapshot when no notification arrives.
    poll_interval_s: float = 1.0
    # Directory where the last loaded index is saved, to start from it when
    # Redis is down at start (gateway.ops.disk_cache); None = no disk cache.
    snapshot_cache_dir: str | None = None
    log_level: str = "INFO"
    # Operations (gateway.ops.metrics, gateway.ops.tls, graceful shutdown).
    # Prometheus /metrics on this HTTP port (on `host`); None or 0 = off.
    metrics_port: int | None = None
    # TLS on the gRPC port: certificate chain and private key (PEM files);
    # with a client CA, clients must present a certificate it signed (mTLS).
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_client_ca_file: str | None = None
    # RPCs in progress at once (a stream counts as one); more get RESOURCE_EXHAUSTED.
    max_concurrent_rpcs: int = 1000
    # On SIGTERM: NOT_SERVING at once, then in-flight calls get this long to finish.
    shutdown_grace_s: float = 10.0
    # Worker processes serving the one port (gateway.ops.workers; SO_REUSEPORT).
    workers: int = 1
    # Set by gateway.ops.workers for its workers: where they share the snapshot
    # arrays (gateway.ops.shared_index); None = each process keeps its own.
    shared_snapshot_dir: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``ELIG_*`` variables (e.g. ``ELIG_REDIS_URL``); errors name the key."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            key = ENV_PREFIX + f.name.upper()
            if key in env:
                values[f.name] = _parse(key, env[key], f.type)
        return cls(**values).validated()

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the given non-None values replaced (CLI flags)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None}).validated()

    def validated(self) -> Settings:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port: {self.port} is not a TCP port")
        if self.max_lines_per_claim < 1:
            raise ValueError(f"max_lines_per_claim: {self.max_lines_per_claim} must be >= 1")
        if self.max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes: {self.max_message_bytes} is too small")
        if self.poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s: {self.poll_interval_s} must be > 0")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port: {self.metrics_port} is not a TCP port")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file, tls_key_file: give both or neither")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file: mutual TLS needs tls_cert_file and tls_key_file")
        if self.max_concurrent_rpcs < 1:
            raise ValueError(f"max_concurrent_rpcs: {self.max_concurrent_rpcs} must be >= 1")
        if self.workers < 1:
            raise ValueError(f"workers: {self.workers} must be >= 1")
        if self.shutdown_grace_s < 0:
            raise ValueError(f"shutdown_grace_s: {self.shutdown_grace_s} must be >= 0")
        return self


def _parse(key: str, raw: str, type_name: Any) -> Any:
    kind = str(type_name)
    try:
        if "bool" in kind:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true/false")
        if "int" in kind:
            return int(raw)
        if "float" in kind:
            return float(raw)
        return raw or None if "None" in kind else raw
    except ValueError as exc:
        raise ValueError(f"environment variable {key}={raw!r}: {exc}") from exc
