"""Gateway configuration: one frozen dataclass, read from the environment in
exactly one place (``Settings.from_env``) and overridden by CLI flags."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from contract.redis_target import READ_FROM, RedisTarget, redis_target

ENV_PREFIX = "ELIG_"


@dataclass(frozen=True)
class Settings:
    # Redis holding the published snapshots; None = the embedded default: a
    # private redis-server loaded with the sample data set.
    redis_url: str | None = None
    # Or the Sentinels that know the primary and its replicas (host:port,...,
    # or a redis[s]://user:password@host:port,... URL for credentials and TLS)
    # and the name they monitor it under (contract.redis_target).
    redis_sentinel: str | None = None
    redis_master_name: str | None = None
    # Where the follower reads snapshots and the change stream: "primary", or
    # "replicas" (through Sentinel; the primary when no replica answers). The
    # audit drain always writes to the primary.
    read_from: str = "primary"
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
    # Give up (exit 1, naming the cause) when no snapshot is loaded within this
    # time; None = wait, NOT_SERVING, for as long as it takes (the embedded
    # default waits 60 s).
    load_timeout_s: float | None = None
    # Directory where the last loaded index is saved, to start from it when
    # Redis is down at start (gateway.ops.disk_cache); None = no disk cache.
    snapshot_cache_dir: str | None = None
    # Emergency-override audit (gateway.ops.audit, gateway.ops.spool): the local
    # spool every override is fsynced to before its answer leaves; None =
    # snapshot_cache_dir/audit-spool, or a temporary directory without one.
    audit_spool_dir: str | None = None
    # When the spool cannot be written: "reject" the override lines (REJECT
    # with the reason overridden) or "pay" them audited in memory only.
    audit_failure_policy: str = "reject"
    # Spool segments already in Redis are kept this long (refill after an erase).
    audit_spool_retention_days: float = 30.0
    log_level: str = "INFO"
    # Data integrity (contract.signing): the loader's public keys (PEM files,
    # comma-separated; several while a key is rotated). Without any the
    # gateway refuses to start unless allow_unsigned is set (logged, metric).
    trusted_keys: str | None = None
    allow_unsigned: bool = False
    # Decide claims with the Python reference (gateway.reference) instead of
    # the compiled claim path (gateway.kernel): without it, a gateway whose
    # extension is not built refuses to start (logged, metric).
    pure_python: bool = False
    # Health details, metrics and an alert say the data is too old when the
    # follower has confirmed nothing with Redis for this long.
    max_data_age_s: float = 300.0
    # Operations (gateway.ops.metrics, gateway.ops.tls, graceful shutdown).
    # Prometheus /metrics on this HTTP port; None or 0 = off. On loopback
    # unless asked: the metrics tell anyone who can read them the traffic mix.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    # TLS on the gRPC port: certificate chain and private key (PEM files);
    # with a client CA, clients must present a certificate it signed (mTLS).
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_client_ca_file: str | None = None
    # Mutual TLS only: which institutions each client certificate may act for,
    # and its role (gateway.ops.identity); None = no per-client check.
    client_identity_file: str | None = None
    # Unary RPCs in progress at once; more get RESOURCE_EXHAUSTED (gateway.ops.limits).
    # Open streams and health checks never take these slots.
    max_concurrent_rpcs: int = 1000
    # Streams (CheckClaims, reflection) open at once; more get RESOURCE_EXHAUSTED.
    max_open_streams: int = 100
    # Per stream, request bytes read ahead of the handler (HTTP/2 window; BDP
    # auto-growth off). A stream whose client does not read its answers holds
    # about this much: 64 KiB, not the ~4 MB the grown window allowed.
    stream_window_bytes: int = 64 * 1024
    # Connections: ping an idle client this often, and drop it when the ping is
    # not answered within the timeout (dead peers, half-open TCP).
    keepalive_time_s: float = 60.0
    keepalive_timeout_s: float = 20.0
    # Clients may ping at most this often (their keepalive); faster = GOAWAY.
    min_client_ping_interval_s: float = 10.0
    # Close connections with no RPC for this long; close every connection after
    # max age (spreads clients over new pods), open RPCs getting the grace to
    # finish. 0 = no limit.
    max_connection_idle_s: float = 300.0
    max_connection_age_s: float = 3600.0
    max_connection_age_grace_s: float = 300.0
    # On SIGTERM: NOT_SERVING at once, calls still answered for drain_s (probes
    # and load balancers see NOT_SERVING and move traffic away), then the
    # server stops taking calls and in-flight ones get shutdown_grace_s to finish.
    drain_s: float = 5.0
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
        try:
            target = redis_target(self.redis_url, self.redis_sentinel, self.redis_master_name)
        except ValueError as exc:
            raise ValueError(f"redis_sentinel: {exc}") from None
        if self.read_from not in READ_FROM:
            raise ValueError(f"read_from: {self.read_from!r} is not one of {', '.join(READ_FROM)}")
        if self.read_from == "replicas" and (target is None or not target.uses_sentinel):
            raise ValueError(
                "read_from: replicas needs --redis-sentinel (ELIG_REDIS_SENTINEL): with one "
                "--redis-url every read goes to that Redis"
            )
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port: {self.port} is not a TCP port")
        if self.max_lines_per_claim < 1:
            raise ValueError(f"max_lines_per_claim: {self.max_lines_per_claim} must be >= 1")
        if self.max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes: {self.max_message_bytes} is too small")
        if self.poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s: {self.poll_interval_s} must be > 0")
        if self.load_timeout_s is not None and self.load_timeout_s <= 0:
            raise ValueError(f"load_timeout_s: {self.load_timeout_s} must be > 0")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port: {self.metrics_port} is not a TCP port")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file, tls_key_file: give both or neither")
        if self.client_identity_file is not None and self.tls_client_ca_file is None:
            raise ValueError(
                "client_identity_file: needs mutual TLS (tls_client_ca_file): without a client "
                "certificate there is no identity to check"
            )
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file: mutual TLS needs tls_cert_file and tls_key_file")
        if self.max_concurrent_rpcs < 1:
            raise ValueError(f"max_concurrent_rpcs: {self.max_concurrent_rpcs} must be >= 1")
        if self.max_open_streams < 1:
            raise ValueError(f"max_open_streams: {self.max_open_streams} must be >= 1")
        if not 16 * 1024 <= self.stream_window_bytes <= 2**31 - 1:
            raise ValueError(
                f"stream_window_bytes: {self.stream_window_bytes} must be in 16384..2147483647"
            )
        for name in ("keepalive_time_s", "keepalive_timeout_s", "min_client_ping_interval_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: {getattr(self, name)} must be > 0")
        for name in (
            "max_connection_idle_s",
            "max_connection_age_s",
            "max_connection_age_grace_s",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: {getattr(self, name)} must be >= 0 (0 = no limit)")
        if self.max_data_age_s <= 0:
            raise ValueError(f"max_data_age_s: {self.max_data_age_s} must be > 0")
        if self.audit_failure_policy not in ("reject", "pay"):
            raise ValueError(
                f"audit_failure_policy: {self.audit_failure_policy!r} is not reject or pay"
            )
        if self.audit_spool_retention_days < 0:
            raise ValueError(
                f"audit_spool_retention_days: {self.audit_spool_retention_days} must be >= 0"
            )
        if self.workers < 1:
            raise ValueError(f"workers: {self.workers} must be >= 1")
        if self.drain_s < 0:
            raise ValueError(f"drain_s: {self.drain_s} must be >= 0")
        if self.shutdown_grace_s < 0:
            raise ValueError(f"shutdown_grace_s: {self.shutdown_grace_s} must be >= 0")
        return self


def redis_of(settings: Settings) -> RedisTarget | None:
    """Where the settings say Redis is (None: the embedded default)."""
    return redis_target(settings.redis_url, settings.redis_sentinel, settings.redis_master_name)


def trusted_key_files(settings: Settings) -> list[str]:
    """The files of ``trusted_keys`` (comma-separated)."""
    return [p.strip() for p in (settings.trusted_keys or "").split(",") if p.strip()]


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
