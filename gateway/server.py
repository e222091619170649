"""Wiring: the grpc.aio server with the eligibility service, the standard
health service (NOT_SERVING until an index is loaded) and server reflection,
plus the background tasks that keep the index current and write the audit.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
import redis.asyncio as aioredis
from grpc_health.v1 import _async as health_aio  # what grpc_health.v1.health.aio names
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import _async as reflection_aio  # what reflection.aio names
from grpc_reflection.v1alpha import reflection, reflection_pb2

from contract.signing import Verifier
from contract.snapshot import Keys
from gateway.claimpath import ClaimPath, claim_path
from gateway.decide import Policy
from gateway.feed import SnapshotFollower
from gateway.index import Index, IndexHolder
from gateway.ops.audit import OverrideAudit, spool_dir_for
from gateway.ops.disk_cache import SnapshotCache
from gateway.ops.identity import IdentityMap
from gateway.ops.interceptors import ObservabilityWrapper, WrappedServer
from gateway.ops.limits import LimitsWrapper
from gateway.ops.metrics import GatewayMetrics, build_info
from gateway.ops.shared_index import SharedSnapshots
from gateway.ops.spool import Spool
from gateway.ops.tls import server_credentials
from gateway.servicer import EligibilityServicer, add_servicer_to_server
from gateway.settings import Settings, redis_of, trusted_key_files
from proto.eligibility.v1 import eligibility_pb2 as pb

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["EligibilityGateway"].full_name
# Health of the override audit's spool, under its own name (grpc health
# Check with service=AUDIT_HEALTH_NAME): NOT_SERVING while it cannot be
# written. The overall status stays SERVING: claims are still decided.
AUDIT_HEALTH_NAME = "eligibility.v1.OverrideAudit"
# Health of the data, under its own name: NOT_SERVING while the follower is
# failing or nothing was confirmed with Redis for --max-data-age-s. Claims are
# still decided from the held index (fail-static); probes and dashboards see it.
DATA_HEALTH_NAME = "eligibility.v1.IndexFreshness"
# How often the data's health is re-evaluated (and logged while it is bad).
DATA_HEALTH_INTERVAL_S = 5.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class Gateway:
    """A running gateway: its server, bound port and background tasks."""

    settings: Settings
    server: grpc.aio.Server
    port: int
    holder: IndexHolder
    health: health_aio.HealthServicer
    follower: SnapshotFollower
    audit: OverrideAudit
    redis: aioredis.Redis
    tasks: list[asyncio.Task[None]]
    metrics: GatewayMetrics | None = None

    async def stop(
        self, grace_s: float = 5.0, drain_s: float = 0.0, cut_short: asyncio.Event | None = None
    ) -> None:
        """Go NOT_SERVING; keep answering calls for ``drain_s`` (ended early when
        ``cut_short`` is set); then take no new calls, give in-flight ones
        ``grace_s`` to finish, and stop everything.

        The drain is for whoever routes traffic here: a load balancer or a
        Kubernetes probe checks health every few seconds, and only once it has
        seen NOT_SERVING does it stop sending calls; a server that stopped
        taking them at once would refuse the calls still routed to it. No
        drain when no index was ever held: nothing was SERVING to route away
        from."""
        # Every service NOT_SERVING, and later set() calls (a swapped index) ignored.
        await self.health.enter_graceful_shutdown()
        if drain_s > 0 and self.holder.current is not None:
            log.info(
                "draining: NOT_SERVING, still answering calls (signal again to stop now)",
                extra={"drain_s": drain_s, "shutdown_grace_s": grace_s},
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for((cut_short or asyncio.Event()).wait(), drain_s)
        await self.server.stop(grace_s)
        for task in self.tasks:
            task.cancel()
        # Bounded: a task that swallowed its cancellation must not hang shutdown.
        done, stuck = await asyncio.wait(self.tasks, timeout=5) if self.tasks else (set(), set())
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error("background task failed", extra={"error": str(task.exception())[:200]})
        if stuck:
            log.error("background tasks did not stop", extra={"tasks": len(stuck)})
        try:
            await self.audit.flush()
        except Exception as exc:  # Redis gone at shutdown: the spool keeps them
            log.warning(
                "override audit records not written at shutdown",
                extra={
                    "pending": len(self.audit.pending),
                    "spool_pending": self.audit.spool_pending,
                    "spool": str(self.audit.spool_dir),
                    "error": str(exc)[:200],
                },
            )
        self.audit.close()
        await self.redis.aclose()
        if self.metrics is not None:
            self.metrics.close()


def build_server(
    settings: Settings,
    holder: IndexHolder,
    audit: OverrideAudit,
    metrics: GatewayMetrics | None = None,
    path: ClaimPath | None = None,
) -> tuple[grpc.aio.Server, health_aio.HealthServicer, int]:
    backstop = rpc_backstop(settings)
    options: list[tuple[str, int]] = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # One connection cannot open more streams than the server serves at once.
        ("grpc.max_concurrent_streams", backstop),
        *connection_options(settings),
    ]
    # Port sharing (SO_REUSEPORT) only among this gateway's own workers
    # (gateway.ops.workers). gRPC turns it on by default, and then a second
    # gateway started on a busy port binds beside the first and takes a share
    # of its connections (issue 13); off, the second one's bind fails.
    options.append(("grpc.so_reuseport", 1 if settings.workers > 1 else 0))
    limits = LimitsWrapper(
        max_concurrent_rpcs=settings.max_concurrent_rpcs,
        max_open_streams=settings.max_open_streams,
        max_response_bytes=settings.max_message_bytes,
    )
    server = grpc.aio.server(
        options=options,
        # Only a backstop: gateway.ops.limits refuses unary calls and streams
        # first, each kind within its own limit, so this is reached only by
        # health checks beyond HEALTH_HEADROOM at once.
        maximum_concurrent_rpcs=backstop,
    )
    # Every handler wrapped once, at registration (not grpc interceptors: those
    # cost every call; gateway.ops.interceptors.WrappedServer). Metrics
    # outermost: they see the calls the limits refuse.
    registry = WrappedServer(
        server,
        (ObservabilityWrapper(metrics.rpcs), limits) if metrics is not None else (limits,),
    )
    servicer = EligibilityServicer(
        holder,
        Policy(
            check_registered_at_institution=settings.check_registered_at_institution,
            emergency_covers_terminated=settings.emergency_covers_terminated,
        ),
        max_lines_per_claim=settings.max_lines_per_claim,
        overrides=audit,
        path=path,
        identities=(
            IdentityMap.from_file(settings.client_identity_file)
            if settings.client_identity_file
            else None
        ),
    )
    add_servicer_to_server(servicer, registry)  # type: ignore[arg-type]  # a wrapping proxy
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, registry)  # type: ignore[arg-type]
    enable_reflection((SERVICE_NAME, health.SERVICE_NAME), registry)  # type: ignore[arg-type]
    address = f"{settings.host}:{settings.port}"
    credentials = server_credentials(settings)
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError:  # grpc: "Failed to bind to address ...", without the cause
        port = 0
    if port == 0:
        check_port_free(settings.host, settings.port)  # names the cause when it finds one
        raise OSError(f"port {settings.port} on {settings.host}: gRPC cannot listen there")
    return server, health_servicer, port


# Server reflection v1 (what grpcurl, Postman and grpc-java's
# ProtoReflectionServiceV1 try first) beside v1alpha (older tools). grpcio-reflection
# serves only v1alpha (grpc/grpc#38576); v1's messages are v1alpha's under a new
# package name, field for field, so the one servicer answers both on the wire.
# Only v1alpha is listed: its descriptors are the ones the servicer can describe.
REFLECTION_V1_NAME = "grpc.reflection.v1.ServerReflection"


def enable_reflection(service_names: tuple[str, ...], server: grpc.aio.Server) -> None:
    """Serve reflection v1 and v1alpha, listing ``service_names`` and reflection."""
    servicer = reflection_aio.ReflectionServicer((*service_names, reflection.SERVICE_NAME))
    handlers = {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
    }
    for name in (REFLECTION_V1_NAME, reflection.SERVICE_NAME):
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))


def check_port_free(host: str, port: int, what: str = "port") -> None:
    """Raise OSError naming ``what``, the port and the host when nothing can
    listen on ``host:port``; e.g. "port 50051 on 0.0.0.0 is in use (another
    gateway?)". gRPC only says "Failed to bind", so a plain socket asks the
    kernel. Port 0 (any free port) is never busy."""
    if not port:
        return
    bare = host.strip("[]")  # gRPC spells IPv6 addresses [::1]
    try:
        addresses = socket.getaddrinfo(
            bare or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise OSError(f"{what} {port} on {host}: {exc.strerror}") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            # As gRPC and the metrics server do: connections a stopped gateway
            # left in TIME_WAIT do not make the port busy; a listener does.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise OSError(f"{what} {port} on {host} is in use (another gateway?)") from None
                raise OSError(f"{what} {port} on {host}: {exc.strerror}") from None


# Health checks at once beyond the unary and stream limits before gRPC's own
# limit refuses anything (a probe every few seconds needs one).
HEALTH_HEADROOM = 100


def rpc_backstop(settings: Settings) -> int:
    """gRPC's global RPC limit, above the sum of ours (gateway.ops.limits)."""
    return settings.max_concurrent_rpcs + settings.max_open_streams + HEALTH_HEADROOM


def connection_options(settings: Settings) -> list[tuple[str, int]]:
    """Keepalive, connection idle/age limits and per-stream flow control, as
    core channel args (grpc include/grpc/impl/channel_arg_names.h)."""

    def ms(seconds: float) -> int:
        return min(round(seconds * 1000), 2**31 - 1)

    options = [
        ("grpc.keepalive_time_ms", ms(settings.keepalive_time_s)),
        ("grpc.keepalive_timeout_ms", ms(settings.keepalive_timeout_s)),
        # Client keepalive pings are accepted this often, with or without calls
        # open; faster ones count as strikes and end in GOAWAY (too_many_pings).
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", ms(settings.min_client_ping_interval_s)),
        # Flow control: a stream reads ahead at most stream_window_bytes of
        # requests. With BDP probing on, gRPC grew the window to ~4 MB per
        # stream on loopback, and 250 streams whose client never read their
        # answers held 1.1 GB (issue 11). The handler asks for the next request
        # only after gRPC has sent the last answer, so a client that does not
        # read stops the stream there (bench/stream_pressure.py).
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", settings.stream_window_bytes),
    ]
    if settings.max_connection_idle_s:
        options.append(("grpc.max_connection_idle_ms", ms(settings.max_connection_idle_s)))
    if settings.max_connection_age_s:
        options.append(("grpc.max_connection_age_ms", ms(settings.max_connection_age_s)))
        grace = settings.max_connection_age_grace_s
        options.append(("grpc.max_connection_age_grace_ms", ms(grace) if grace else 2**31 - 1))
    return options


async def start_gateway(settings: Settings) -> Gateway:
    """Start serving; health says SERVING once the first index is loaded."""
    target = redis_of(settings)
    if target is None:
        raise ValueError("redis_url: start_gateway needs a Redis URL or Sentinels")
    verifier = _verifier(settings)
    # The audit drain writes to the primary; the follower reads from --read-from
    # (a replica, the primary as fallback). Closing client closes reader too.
    client, reader = target.async_clients(settings.read_from, socket_keepalive=True)
    keys = Keys(settings.prefix)
    policy = Policy(
        check_registered_at_institution=settings.check_registered_at_institution,
        emergency_covers_terminated=settings.emergency_covers_terminated,
    )
    path = claim_path(policy, settings.max_lines_per_claim, pure_python=settings.pure_python)
    holder = IndexHolder(path.prepare)
    spool_dir, temporary = spool_dir_for(settings.audit_spool_dir, settings.snapshot_cache_dir)
    spool = Spool(spool_dir, retention_s=settings.audit_spool_retention_days * 86400)
    audit = OverrideAudit(
        client,
        keys.overrides,
        spool=spool,
        failure_policy=settings.audit_failure_policy,
        temporary_spool=temporary,
    )
    log.info(
        "override audit spool",
        extra={
            "spool": str(spool.lane),
            "chain": spool.chain_id,
            "undrained": spool.pending,
            "temporary": temporary,
            "failure_policy": settings.audit_failure_policy,
        },
    )
    metrics = GatewayMetrics(holder, audit=audit, counters=path.counters)
    metrics.state.pure_python = not path.compiled
    try:
        server, health_servicer, port = build_server(settings, holder, audit, metrics, path)
    except BaseException:  # the port is busy: leave no temporary spool behind
        await _release(audit, client)
        raise
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, NOT_SERVING)
    await health_servicer.set(AUDIT_HEALTH_NAME, SERVING)

    async def audit_health(ok: bool) -> None:
        await health_servicer.set(AUDIT_HEALTH_NAME, SERVING if ok else NOT_SERVING)

    audit.on_spool_state = audit_health

    async def serving(index: Index) -> None:
        metrics.index_swapped(index)
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, SERVING)

    follower = SnapshotFollower(
        reader,
        keys,
        holder,
        poll_interval_s=settings.poll_interval_s,
        on_swap=serving,
        cache=(
            SnapshotCache(settings.snapshot_cache_dir, settings.prefix)
            if settings.snapshot_cache_dir
            else None
        ),
        shared=(
            SharedSnapshots(settings.shared_snapshot_dir) if settings.shared_snapshot_dir else None
        ),
        verifier=verifier,
        max_data_age_s=settings.max_data_age_s,
    )
    metrics.state.follower = follower
    metrics.state.unsigned_allowed = verifier is None
    if settings.metrics_port:
        try:
            metrics_port = metrics.serve(settings.metrics_host, settings.metrics_port)
        except OSError:
            await _release(audit, client)
            check_port_free(settings.metrics_host, settings.metrics_port, "metrics port")
            raise
        log.info(
            "metrics listening",
            extra={"metrics_port": metrics_port, "metrics_host": settings.metrics_host},
        )
    await server.start()
    await health_servicer.set(DATA_HEALTH_NAME, NOT_SERVING)

    async def watch_data() -> None:
        await watch_data_health(follower, health_servicer)

    tasks = [
        asyncio.create_task(supervised("snapshot follower", follower.run)),
        asyncio.create_task(audit.run()),
        asyncio.create_task(supervised("data health", watch_data)),
    ]
    log.info(
        "gateway listening",
        extra={"port": port, "host": settings.host, "prefix": settings.prefix, **build_info()},
    )
    return Gateway(
        settings, server, port, holder, health_servicer, follower, audit, client, tasks, metrics
    )


async def _release(audit: OverrideAudit, client: aioredis.Redis) -> None:
    """Undo a start that failed before serving (nothing was audited yet)."""
    audit.close()
    await client.aclose()


async def watch_data_health(
    follower: SnapshotFollower,
    health_servicer: health_aio.HealthServicer,
    interval_s: float = DATA_HEALTH_INTERVAL_S,
) -> None:
    """Keep ``DATA_HEALTH_NAME`` in step with the follower; while the data is not
    good, log the follower's health details every ``interval_s`` (a warning
    an operator finds in the log without scraping metrics)."""
    good: bool | None = None
    while True:
        now_good = follower.held is not None and follower.follower_up and not follower.data_too_old
        if now_good != good:
            await health_servicer.set(DATA_HEALTH_NAME, SERVING if now_good else NOT_SERVING)
            good = now_good
        if not now_good and follower.held is not None:
            log.warning("data not fresh", extra=follower.health_details())
        await asyncio.sleep(interval_s)


def _verifier(settings: Settings) -> Verifier | None:
    """The loader's public keys; None only when told ``--allow-unsigned``."""
    files = trusted_key_files(settings)
    if files:
        verifier = Verifier.from_files(files)
        log.info("verifying published data", extra={"trusted_key_ids": sorted(verifier.keys)})
        return verifier
    if not settings.allow_unsigned:
        raise ValueError(
            "trusted_keys: no public key of the loader given (--trusted-keys FILE or "
            "ELIG_TRUSTED_KEYS); without one, anyone who can write to Redis decides who is "
            "paid. Start with --allow-unsigned only on a trusted test setup."
        )
    log.warning(
        "allow_unsigned: published data is NOT verified; anyone who can write to Redis "
        "decides who is paid (metric eligibility_unsigned_data_allowed = 1)"
    )
    return None


async def supervised(name: str, run: Callable[[], Awaitable[None]]) -> None:
    """Run a long-lived task for ever: if it ever returns or raises (it is not
    meant to), log it and start it again after a pause."""
    while True:
        try:
            await run()
            log.error("%s returned; restarting it", name)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s died; restarting it", name)
        await asyncio.sleep(1.0)


async def wait_until_loaded(
    gateway: Gateway, timeout_s: float | None, report_every_s: float = 5.0
) -> Index:
    """Wait for the first index. Meanwhile log, after a second and then every
    ``report_every_s``, why there is none (``SnapshotFollower.waiting_cause``:
    Redis unreachable, nothing published under the prefix, the current
    snapshot unusable); after ``timeout_s`` raise TimeoutError naming the
    prefix, the URL (password masked) and that cause."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    report_at = started + min(1.0, report_every_s)
    prefix = gateway.settings.prefix
    target = redis_of(gateway.settings)
    url = target.describe() if target is not None else ""
    while gateway.holder.current is None:
        now = loop.time()
        timed_out = timeout_s is not None and now - started > timeout_s
        if timed_out or now >= report_at:
            waiting = await gateway.follower.waiting_cause()
            if gateway.holder.current is not None:
                break
            if timed_out:
                raise TimeoutError(
                    f"no snapshot loaded from prefix {prefix!r} at {url} within {timeout_s} s: "
                    f"{waiting.detail}"
                )
            log.warning(
                "waiting for a snapshot under prefix %r at %s (%.0f s): %s",
                prefix,
                url,
                now - started,
                waiting.detail,
                extra={"prefix": prefix, "redis_url": url, "cause": waiting.cause},
            )
            report_at = now + report_every_s
        await asyncio.sleep(0.05)
    assert gateway.holder.current is not None
    return gateway.holder.current
