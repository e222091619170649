"""``--workers N``: N gateway processes on one port, sharing one index copy.

One Python process decides on one core (the GIL); a machine with more cores
runs more processes. The parent forks the workers before any gRPC server or
channel exists, as grpc's own multiprocessing example does
(grpc/grpc ``examples/python/multiprocessing/server.py``): gRPC's core is
not fork-safe once started. Every worker binds the same port with
``SO_REUSEPORT`` (the ``grpc.so_reuseport`` channel option) and the kernel
spreads incoming connections over them. Only they share it: a single
gateway binds without ``SO_REUSEPORT`` (``gateway.server.build_server``),
and the parent checks that the port, and every worker's metrics port, is
free before it forks, so a second gateway started on the port (with or
without ``--workers``) exits with "port P on H is in use" instead of taking
a share of the connections. Each worker is a whole gateway (its
own Redis follower, overlay, audit and health), so one worker dying does not
take the port down; the snapshot arrays themselves are shared through
``gateway.ops.shared_index`` (files on ``/dev/shm`` mapped by every worker), so
the index's memory does not grow with N.

The parent replaces a worker that dies (at most MAX_RESTARTS_PER_MINUTE a
minute), forwards SIGINT/SIGTERM to the workers, waits for all of them,
removes the shared directory and exits with the first non-zero exit code.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from contract.version import package_version
from gateway.ops.redis_process import free_port
from gateway.server import check_port_free
from gateway.settings import Settings

log = logging.getLogger(__name__)

SHM = Path("/dev/shm")


def worker_settings(settings: Settings, index: int, port: int, shared_dir: str) -> Settings:
    """Worker ``index``'s settings: the one concrete port, the shared directory,
    and its own metrics port (``metrics_port + index``) when metrics are on."""
    metrics_port = settings.metrics_port + index if settings.metrics_port else None
    return settings.with_overrides(
        port=port, shared_snapshot_dir=shared_dir, metrics_port=metrics_port
    )


def check_ports_free(settings: Settings, port: int) -> None:
    """Raise OSError naming the port when the gRPC port or a worker's metrics
    port is taken. Workers bind with SO_REUSEPORT, which would let them join
    another gateway's workers on the port: this check, without it, does not."""
    check_port_free(settings.host, port)
    for index in range(settings.workers):
        metrics_port = worker_settings(settings, index, port, "").metrics_port
        if metrics_port:
            check_port_free(settings.metrics_host, metrics_port, "metrics port")


# A worker that dies is replaced (its port share and its core come back); one
# that keeps dying is not, so a crash loop cannot hide behind restarts.
MAX_RESTARTS_PER_MINUTE = 5


def run_workers(settings: Settings, serve: Callable[[Settings], int]) -> int:
    """Fork ``settings.workers`` processes, each running ``serve(worker settings)``,
    and replace a worker that dies until SIGINT/SIGTERM stops them all."""
    # Port 0 would give each worker a different free port: pick one for all.
    port = settings.port or free_port()
    try:
        check_ports_free(settings, port)
    except OSError as exc:
        log.error("gateway stopped", extra={"error": str(exc)})
        return 1
    shared_dir = tempfile.mkdtemp(
        prefix=f"elig-{settings.prefix}-", dir=SHM if SHM.is_dir() else None
    )
    workers: dict[int, int] = {}  # pid -> worker index
    stopping = False

    def spawn(index: int) -> int:
        # The parent never starts a gRPC server or channel, so forking again
        # later is as safe as the first time.
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                code = serve(worker_settings(settings, index, port, shared_dir))
            finally:
                os._exit(code)
        workers[pid] = index
        return pid

    try:
        for index in range(settings.workers):
            spawn(index)
        log.info(
            "workers started",
            extra={
                "workers": settings.workers,
                "port": port,
                "pids": list(workers),
                "version": package_version(),
            },
        )

        def forward(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            stopping = True
            for pid in list(workers):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)

        signal.signal(signal.SIGINT, forward)
        signal.signal(signal.SIGTERM, forward)
        codes: list[int] = []
        restarts: list[float] = []
        while workers:
            pid, status = os.wait()
            index = workers.pop(pid, -1)
            if index < 0:
                continue
            code = os.waitstatus_to_exitcode(status)
            if stopping:
                codes.append(code)
                continue
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < 60]
            if len(restarts) >= MAX_RESTARTS_PER_MINUTE:
                log.error(
                    "worker died too often; not replaced",
                    extra={"worker": index, "pid": pid, "exit_code": code},
                )
                codes.append(code if code != 0 else 1)
                continue
            restarts.append(now)
            new_pid = spawn(index)
            log.warning(
                "worker died; replaced",
                extra={"worker": index, "pid": pid, "exit_code": code, "new_pid": new_pid},
            )
        return next((code for code in codes if code != 0), 0)
    finally:
        shutil.rmtree(shared_dir, ignore_errors=True)
