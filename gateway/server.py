"""Wiring: the grpc.aio server with the eligibility service, the standard
health service (NOT_SERVING until an index is loaded) and server reflection,
plus the background tasks that keep the index current and write the audit.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc
import redis.asyncio as aioredis
from grpc_health.v1 import _async as health_aio  # what grpc_health.v1.health.aio names
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from contract.snapshot import Keys
from gateway.decide import Policy
from gateway.feed import SnapshotFollower
from gateway.index import Index, IndexHolder
from gateway.ops.audit import OverrideAudit
from gateway.ops.disk_cache import SnapshotCache
from gateway.ops.interceptors import ObservabilityInterceptor
from gateway.ops.metrics import GatewayMetrics
from gateway.ops.shared_index import SharedSnapshots
from gateway.ops.tls import server_credentials
from gateway.servicer import EligibilityServicer, add_servicer_to_server
from gateway.settings import Settings
from proto.eligibility.v1 import eligibility_pb2 as pb

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["EligibilityGateway"].full_name
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

    async def stop(self, grace_s: float = 5.0) -> None:
        """Go NOT_SERVING, let in-flight calls finish, then stop everything."""
        await self.health.enter_graceful_shutdown()
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
        except Exception as exc:  # Redis gone at shutdown: say what is lost
            log.warning(
                "override audit records not written at shutdown",
                extra={"pending": len(self.audit.pending), "error": str(exc)[:200]},
            )
        await self.redis.aclose()
        if self.metrics is not None:
            self.metrics.close()


def build_server(
    settings: Settings,
    holder: IndexHolder,
    audit: OverrideAudit,
    metrics: GatewayMetrics | None = None,
) -> tuple[grpc.aio.Server, health_aio.HealthServicer, int]:
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
    ]
    if settings.workers > 1:  # every worker binds the same port (gateway.ops.workers)
        options.append(("grpc.so_reuseport", 1))
    server = grpc.aio.server(
        options=options,
        # Beyond this many RPCs at once, new ones get RESOURCE_EXHAUSTED at once.
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        interceptors=[ObservabilityInterceptor(metrics)] if metrics is not None else None,
    )
    servicer = EligibilityServicer(
        holder,
        Policy(
            check_registered_at_institution=settings.check_registered_at_institution,
            emergency_covers_terminated=settings.emergency_covers_terminated,
        ),
        max_lines_per_claim=settings.max_lines_per_claim,
        overrides=audit,
        observer=metrics,
    )
    add_servicer_to_server(servicer, server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{settings.host}:{settings.port}"
    credentials = server_credentials(settings)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {settings.host}:{settings.port}")
    return server, health_servicer, port


async def start_gateway(settings: Settings) -> Gateway:
    """Start serving; health says SERVING once the first index is loaded."""
    if settings.redis_url is None:
        raise ValueError("redis_url: start_gateway needs a Redis URL")
    client = aioredis.Redis.from_url(settings.redis_url, socket_keepalive=True)
    keys = Keys(settings.prefix)
    holder = IndexHolder()
    audit = OverrideAudit(client, keys.overrides)
    metrics = GatewayMetrics(holder, audit=audit)
    server, health_servicer, port = build_server(settings, holder, audit, metrics)
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, NOT_SERVING)

    async def serving(index: Index) -> None:
        metrics.index_swapped(index)
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, SERVING)

    follower = SnapshotFollower(
        client,
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
    )
    metrics.state.follower = follower
    if settings.metrics_port:
        metrics_port = metrics.serve(settings.host, settings.metrics_port)
        log.info("metrics listening", extra={"metrics_port": metrics_port})
    await server.start()
    tasks = [asyncio.create_task(follower.run()), asyncio.create_task(audit.run())]
    log.info("gateway listening", extra={"port": port, "prefix": settings.prefix})
    return Gateway(
        settings, server, port, holder, health_servicer, follower, audit, client, tasks, metrics
    )


async def wait_until_loaded(gateway: Gateway, timeout_s: float | None) -> Index:
    """Wait for the first index; raise TimeoutError naming the Redis prefix."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    warned_at = started
    while gateway.holder.current is None:
        now = loop.time()
        if timeout_s is not None and now - started > timeout_s:
            raise TimeoutError(
                f"no snapshot published under prefix {gateway.settings.prefix!r} "
                f"within {timeout_s} s"
            )
        if now - warned_at > 30:
            warned_at = now
            log.warning(
                "still no snapshot: NOT_SERVING until the loader publishes one",
                extra={"prefix": gateway.settings.prefix},
            )
        await asyncio.sleep(0.05)
    return gateway.holder.current
