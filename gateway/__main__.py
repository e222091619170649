"""``python -m gateway``: run the eligibility gateway.

With no Redis URL (flag or ELIG_REDIS_URL) it runs the embedded default: a
private redis-server on a free port, the sample data set made and loaded by
the loader, the gateway on top, and a few claims decided over gRPC to show
it working. With a Redis URL it serves whatever the loader published there.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from gateway.ops.logs import configure_logging
from gateway.server import start_gateway, wait_until_loaded
from gateway.settings import Settings

log = logging.getLogger("gateway")


def build_parser(defaults: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway",
        description="Claims-settlement eligibility gateway (gRPC). Every flag can also be set "
        "by an ELIG_* environment variable, e.g. ELIG_REDIS_URL, ELIG_PORT.",
    )
    parser.add_argument(
        "--redis-url",
        help="Redis holding the published snapshots (ELIG_REDIS_URL); omit for the embedded "
        "default: a private redis-server with the sample data set",
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
    ops = parser.add_argument_group("operations (gateway.ops.metrics, gateway.ops.tls)")
    ops.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus /metrics on this HTTP port (ELIG_METRICS_PORT; default off)",
    )
    ops.add_argument("--tls-cert-file", help="PEM certificate chain: serve gRPC over TLS")
    ops.add_argument("--tls-key-file", help="PEM private key of --tls-cert-file")
    ops.add_argument(
        "--tls-client-ca-file",
        help="PEM CA certificates: require client certificates signed by them (mutual TLS)",
    )
    ops.add_argument(
        "--max-concurrent-rpcs",
        type=int,
        help="RPCs at once, a stream counting as one; more get RESOURCE_EXHAUSTED "
        f"(default {defaults.max_concurrent_rpcs})",
    )
    ops.add_argument(
        "--shutdown-grace-s",
        type=float,
        help="on SIGTERM, NOT_SERVING at once, then in-flight calls get this long to finish "
        f"(default {defaults.shutdown_grace_s})",
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
        help="give up if no snapshot is published within this time (default: wait, "
        "NOT_SERVING, for as long as it takes; 60 s for the embedded default)",
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

    stop = _stop_on_signals()
    embedded: EmbeddedData | None = None
    if settings.redis_url is None:
        embedded = EmbeddedData.start(settings.prefix, args.sample_practitioners)
        settings = settings.with_overrides(redis_url=embedded.redis.url)
    try:
        gateway = await start_gateway(settings)
        try:
            timeout_s = args.load_timeout_s or (60.0 if embedded is not None else None)
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
            await gateway.stop(settings.shutdown_grace_s)
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
            prefix=args.prefix,
            host=args.host,
            port=args.port,
            check_registered_at_institution=args.check_registered_at_institution,
            emergency_covers_terminated=args.emergency_covers_terminated,
            max_lines_per_claim=args.max_lines_per_claim,
            max_message_bytes=args.max_message_bytes,
            poll_interval_s=args.poll_interval_s,
            snapshot_cache_dir=args.snapshot_cache_dir,
            log_level=args.log_level,
            metrics_port=args.metrics_port,
            tls_cert_file=args.tls_cert_file,
            tls_key_file=args.tls_key_file,
            tls_client_ca_file=args.tls_client_ca_file,
            max_concurrent_rpcs=args.max_concurrent_rpcs,
            shutdown_grace_s=args.shutdown_grace_s,
            workers=args.workers,
        )
    except ValueError as exc:
        parser.error(str(exc))
    if settings.workers > 1 and settings.redis_url is None:
        parser.error("--workers: give --redis-url (the embedded default is one process)")
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
