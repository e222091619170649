"""``python -m gateway``: run the eligibility gateway.

With no Redis URL (flag or ELIG_REDIS_URL) and no Sentinels (ELIG_REDIS_SENTINEL)
it runs the embedded default: a private redis-server on a free port, the sample
data set made and loaded by the loader, the gateway on top, and a few claims
decided over gRPC to show it working. Otherwise it serves whatever the loader
published there.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import platform
import signal
import sys
from collections.abc import Sequence
from importlib import metadata

from contract.version import version_line
from gateway.ops.logs import configure_logging, quiet_grpc_core
from gateway.settings import Settings, redis_of

# Nothing above imports grpc: quiet_grpc_core() in main() must run first.

log = logging.getLogger("gateway")


def build_parser(defaults: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway",
        description="Claims-settlement eligibility gateway (gRPC). Every flag can also be set "
        "by an ELIG_* environment variable, e.g. ELIG_REDIS_URL, ELIG_PORT.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"{version_line()} (python {platform.python_version()}, "
        f"grpcio {metadata.version('grpcio')})",
    )
    parser.add_argument(
        "--redis-url",
        help="Redis holding the published snapshots (ELIG_REDIS_URL); omit (and "
        "--redis-sentinel) for the embedded default: a private redis-server with the sample "
        "data set",
    )
    parser.add_argument(
        "--redis-sentinel",
        metavar="HOST:PORT,...",
        help="instead of --redis-url: the Redis Sentinels that know the primary and its "
        "replicas (host:port,host:port; or redis[s]://user:password@host:port,host:port/0?... "
        "for the data nodes' and Sentinels' credentials and TLS) (ELIG_REDIS_SENTINEL)",
    )
    parser.add_argument(
        "--redis-master-name",
        metavar="NAME",
        help="with --redis-sentinel: the name the Sentinels monitor the primary under "
        "(ELIG_REDIS_MASTER_NAME)",
    )
    parser.add_argument(
        "--read-from",
        choices=("primary", "replicas"),
        help="with --redis-sentinel: follow snapshots and changes from a replica (the primary "
        "when no replica answers); the audit always goes to the primary "
        f"(ELIG_READ_FROM; default {defaults.read_from})",
    )
    parser.add_argument("--prefix", help=f"Redis key prefix (default {defaults.prefix!r})")
    parser.add_argument("--host", help=f"address to listen on (default {defaults.host})")
    parser.add_argument(
        "--port", type=int, help=f"gRPC port, 0 = any free (default {defaults.port})"
    )
    parser.add_argument(
        "--check-registered-at-institution",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="rule 4: hospital lines need the practitioner registered at the claim's institution "
        f"(default {defaults.check_registered_at_institution})",
    )
    parser.add_argument(
        "--emergency-covers-terminated",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="rule 5: emergency care by a TERMINATED practitioner is paid "
        f"(default {defaults.emergency_covers_terminated})",
    )
    parser.add_argument(
        "--max-lines-per-claim",
        type=int,
        help=f"larger claims get INVALID_ARGUMENT (default {defaults.max_lines_per_claim})",
    )
    parser.add_argument(
        "--max-message-bytes",
        type=int,
        help=f"largest gRPC message accepted (default {defaults.max_message_bytes})",
    )
    parser.add_argument(
        "--poll-interval-s",
        type=float,
        help=f"look for a new snapshot at least this often (default {defaults.poll_interval_s})",
    )
    parser.add_argument(
        "--snapshot-cache-dir",
        help="save the loaded index here and start from it when Redis is down at start "
        "(ELIG_SNAPSHOT_CACHE_DIR; default: no disk cache)",
    )
    parser.add_argument("--log-level", help=f"(default {defaults.log_level})")
    audit = parser.add_argument_group("emergency-override audit (gateway.ops.audit)")
    audit.add_argument(
        "--audit-spool-dir",
        help="local spool every override is fsynced to before its answer leaves, drained to "
        "Redis; a restarted gateway drains what it left (ELIG_AUDIT_SPOOL_DIR; default "
        "SNAPSHOT_CACHE_DIR/audit-spool, else a temporary directory)",
    )
    audit.add_argument(
        "--audit-failure-policy",
        choices=("reject", "pay"),
        help="when the spool cannot be written: reject the override lines or pay them audited "
        f"in memory only (ELIG_AUDIT_FAILURE_POLICY; default {defaults.audit_failure_policy})",
    )
    audit.add_argument(
        "--audit-spool-retention-days",
        type=float,
        help="keep spool segments already in Redis this long, to refill an erased stream "
        f"(default {defaults.audit_spool_retention_days})",
    )
    trust = parser.add_argument_group("data integrity (contract.signing)")
    trust.add_argument(
        "--trusted-keys",
        help="the loader's public key file(s) (PEM, comma-separated; several while rotating "
        "keys); published data not signed by one of them is refused (ELIG_TRUSTED_KEYS). "
        "The embedded default makes its own key pair.",
    )
    trust.add_argument(
        "--allow-unsigned",
        action="store_true",
        default=None,
        help="serve data without verifying who published it (trusted test setups only; "
        "logged, metric eligibility_unsigned_data_allowed) (ELIG_ALLOW_UNSIGNED)",
    )
    trust.add_argument(
        "--pure-python",
        action="store_true",
        default=None,
        help="decide claims with the Python reference instead of the compiled claim path "
        "(several times slower; logged, metric eligibility_pure_python); without it a gateway "
        "whose compiled extension is not built refuses to start (ELIG_PURE_PYTHON)",
    )
    trust.add_argument(
        "--max-data-age-s",
        type=float,
        help="health details, a metric and an alert say the data is too old when nothing was "
        "confirmed with Redis for this long "
        f"(ELIG_MAX_DATA_AGE_S; default {defaults.max_data_age_s})",
    )
    ops = parser.add_argument_group("operations (gateway.ops.metrics, gateway.ops.tls)")
    ops.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus /metrics on this HTTP port (ELIG_METRICS_PORT; default off)",
    )
    ops.add_argument(
        "--metrics-host",
        help="address the metrics port listens on; 0.0.0.0 for a Prometheus on another "
        f"machine (ELIG_METRICS_HOST; default {defaults.metrics_host})",
    )
    ops.add_argument("--tls-cert-file", help="PEM certificate chain: serve gRPC over TLS")
    ops.add_argument("--tls-key-file", help="PEM private key of --tls-cert-file")
    ops.add_argument(
        "--tls-client-ca-file",
        help="PEM CA certificates: require client certificates signed by them (mutual TLS)",
    )
    ops.add_argument(
        "--client-identity-file",
        help="JSON map of client certificate identities to the institutions they may act for "
        "and their role (gateway.ops.identity); needs --tls-client-ca-file",
    )
    limits = parser.add_argument_group(
        "limits (gateway.ops.limits; health checks are never refused by them)"
    )
    limits.add_argument(
        "--max-concurrent-rpcs",
        type=int,
        help="unary calls at once; more get RESOURCE_EXHAUSTED; open streams do not count "
        f"(ELIG_MAX_CONCURRENT_RPCS; default {defaults.max_concurrent_rpcs})",
    )
    limits.add_argument(
        "--max-open-streams",
        type=int,
        help="CheckClaims (and reflection) streams open at once; more get RESOURCE_EXHAUSTED "
        f"(ELIG_MAX_OPEN_STREAMS; default {defaults.max_open_streams})",
    )
    limits.add_argument(
        "--stream-window-bytes",
        type=int,
        help="request bytes read ahead per stream: what a client that does not read its "
        f"answers can make the server hold (default {defaults.stream_window_bytes})",
    )
    limits.add_argument(
        "--keepalive-time-s",
        type=float,
        help=f"ping idle clients this often (default {defaults.keepalive_time_s})",
    )
    limits.add_argument(
        "--keepalive-timeout-s",
        type=float,
        help="close a connection whose ping is not answered within this time "
        f"(default {defaults.keepalive_timeout_s})",
    )
    limits.add_argument(
        "--min-client-ping-interval-s",
        type=float,
        help="clients pinging more often than this are disconnected (GOAWAY) "
        f"(default {defaults.min_client_ping_interval_s})",
    )
    limits.add_argument(
        "--max-connection-idle-s",
        type=float,
        help="close connections with no RPC for this long, 0 = never "
        f"(default {defaults.max_connection_idle_s})",
    )
    limits.add_argument(
        "--max-connection-age-s",
        type=float,
        help="close every connection after this long (clients reconnect), 0 = never "
        f"(default {defaults.max_connection_age_s})",
    )
    limits.add_argument(
        "--max-connection-age-grace-s",
        type=float,
        help="then give its open calls this long to finish "
        f"(default {defaults.max_connection_age_grace_s})",
    )
    ops.add_argument(
        "--drain-s",
        type=float,
        help="on SIGTERM, NOT_SERVING but still answering calls for this long, so that "
        "probes and load balancers move traffic away; a second signal ends it "
        f"(ELIG_DRAIN_S; default {defaults.drain_s})",
    )
    ops.add_argument(
        "--shutdown-grace-s",
        type=float,
        help="after the drain, no new calls; those in flight get this long to finish "
        f"(ELIG_SHUTDOWN_GRACE_S; default {defaults.shutdown_grace_s})",
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="worker processes on the one port (SO_REUSEPORT), sharing one copy of the "
        f"index; needs --redis-url; metrics on --metrics-port + i (default {defaults.workers})",
    )
    parser.add_argument(
        "--load-timeout-s",
        type=float,
        help="give up (exit 1, naming the cause) if no snapshot is loaded within this time "
        "(ELIG_LOAD_TIMEOUT_S; default: wait, NOT_SERVING, for as long as it takes; 60 s for "
        "the embedded default)",
    )
    demo = parser.add_argument_group("embedded default")
    demo.add_argument("--no-demo", action="store_true", help="do not send the demo claims")
    demo.add_argument(
        "--exit-after-demo", action="store_true", help="stop once the demo claims are decided"
    )
    demo.add_argument(
        "--sample-practitioners",
        type=int,
        default=5000,
        help="size of the embedded sample data set (default 5000)",
    )
    return parser


async def run(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.ops.embedded import EmbeddedData
    from gateway.server import start_gateway, wait_until_loaded

    stop = _stop_on_signals()
    embedded: EmbeddedData | None = None
    if settings.redis_url is None and settings.redis_sentinel is None:
        embedded = EmbeddedData.start(settings.prefix, args.sample_practitioners)
        settings = settings.with_overrides(
            redis_url=embedded.redis.url, trusted_keys=str(embedded.public_key)
        )
    try:
        gateway = await start_gateway(settings)
        try:
            timeout_s = settings.load_timeout_s or (60.0 if embedded is not None else None)
            loaded = asyncio.ensure_future(wait_until_loaded(gateway, timeout_s))
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({loaded, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not loaded.done():  # a signal before the first snapshot arrived
                loaded.cancel()
                return 0
            stopped.cancel()
            index = loaded.result()
            log.info(
                "serving",
                extra={
                    "redis": where.describe() if (where := redis_of(settings)) else None,
                    "port": gateway.port,
                    "index_version": index.version,
                    "practitioners": len(index),
                },
            )
            if embedded is not None and not args.no_demo:
                from gateway.ops.demo import show_demo_claims

                await show_demo_claims(f"127.0.0.1:{gateway.port}", embedded.data_dir)
            if args.exit_after_demo:
                return 0
            print(
                f"gateway serving on {settings.host}:{gateway.port} "
                f"(index version {gateway.holder.version}); Ctrl-C to stop",
                flush=True,
            )
            await stop.wait()
            log.info("stopping: signal received")
            return 0
        finally:
            # Drain only on a signal (not after the demo or a failure); a
            # second signal ends the drain at once.
            drain_s = settings.drain_s if stop.is_set() else 0.0
            stop.clear()
            await gateway.stop(settings.shutdown_grace_s, drain_s=drain_s, cut_short=stop)
    finally:
        if embedded is not None:
            embedded.stop()


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM, so that every phase shuts down cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def main(argv: Sequence[str] | None = None) -> int:
    quiet_grpc_core()
    try:
        defaults = Settings.from_env()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    parser = build_parser(defaults)
    args = parser.parse_args(argv)
    try:
        settings = defaults.with_overrides(
            redis_url=args.redis_url,
            redis_sentinel=args.redis_sentinel,
            redis_master_name=args.redis_master_name,
            read_from=args.read_from,
            prefix=args.prefix,
            host=args.host,
            port=args.port,
            check_registered_at_institution=args.check_registered_at_institution,
            emergency_covers_terminated=args.emergency_covers_terminated,
            max_lines_per_claim=args.max_lines_per_claim,
            max_message_bytes=args.max_message_bytes,
            poll_interval_s=args.poll_interval_s,
            load_timeout_s=args.load_timeout_s,
            snapshot_cache_dir=args.snapshot_cache_dir,
            audit_spool_dir=args.audit_spool_dir,
            audit_failure_policy=args.audit_failure_policy,
            audit_spool_retention_days=args.audit_spool_retention_days,
            trusted_keys=args.trusted_keys,
            allow_unsigned=args.allow_unsigned,
            pure_python=args.pure_python,
            max_data_age_s=args.max_data_age_s,
            log_level=args.log_level,
            metrics_port=args.metrics_port,
            metrics_host=args.metrics_host,
            tls_cert_file=args.tls_cert_file,
            tls_key_file=args.tls_key_file,
            tls_client_ca_file=args.tls_client_ca_file,
            client_identity_file=args.client_identity_file,
            max_concurrent_rpcs=args.max_concurrent_rpcs,
            max_open_streams=args.max_open_streams,
            stream_window_bytes=args.stream_window_bytes,
            keepalive_time_s=args.keepalive_time_s,
            keepalive_timeout_s=args.keepalive_timeout_s,
            min_client_ping_interval_s=args.min_client_ping_interval_s,
            max_connection_idle_s=args.max_connection_idle_s,
            max_connection_age_s=args.max_connection_age_s,
            max_connection_age_grace_s=args.max_connection_age_grace_s,
            drain_s=args.drain_s,
            shutdown_grace_s=args.shutdown_grace_s,
            workers=args.workers,
        )
    except ValueError as exc:
        parser.error(str(exc))
    if settings.workers > 1 and settings.redis_url is None and settings.redis_sentinel is None:
        parser.error(
            "--workers: give --redis-url or --redis-sentinel (the embedded default is one process)"
        )
    configure_logging(settings.log_level)
    if settings.workers > 1:
        from gateway.ops.workers import run_workers

        return run_workers(settings, lambda worker: _serve(worker, args))
    return _serve(settings, args)


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    try:
        return asyncio.run(run(settings, args))
    except KeyboardInterrupt:
        return 0
    except (TimeoutError, OSError, RuntimeError, ValueError) as exc:
        log.error("gateway stopped", extra={"error": str(exc)})
        return 1


if __name__ == "__main__":
    sys.exit(main())
