"""``--workers N``: N gateway processes on one port, sharing one index copy.

One Python process decides on one core (the GIL); a machine with more cores
runs more processes. The parent forks the workers before any gRPC server or
channel exists, as grpc's own multiprocessing example does
(grpc/grpc ``examples/python/multiprocessing/server.py``): gRPC's core is
not fork-safe once started. Every worker binds the same port with
``SO_REUSEPORT`` (the ``grpc.so_reuseport`` channel option) and the kernel
spreads incoming connections over them. Each worker is a whole gateway (its
own Redis follower, overlay, audit and health), so one worker dying does not
take the port down; the snapshot arrays themselves are shared through
``gateway.shared_index`` (files on ``/dev/shm`` mapped by every worker), so
the index's memory does not grow with N.

The parent forwards SIGINT/SIGTERM to the workers, waits for all of them,
removes the shared directory and exits with the first non-zero exit code.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from .redis_process import free_port
from .settings import Settings

log = logging.getLogger(__name__)

SHM = Path("/dev/shm")


def worker_settings(settings: Settings, index: int, port: int, shared_dir: str) -> Settings:
    """Worker ``index``'s settings: the one concrete port, the shared directory,
    and its own metrics port (``metrics_port + index``) when metrics are on."""
    metrics_port = settings.metrics_port + index if settings.metrics_port else None
    return settings.with_overrides(
        port=port, shared_snapshot_dir=shared_dir, metrics_port=metrics_port
    )


def run_workers(settings: Settings, serve: Callable[[Settings], int]) -> int:
    """Fork ``settings.workers`` processes, each running ``serve(worker settings)``."""
    # Port 0 would give each worker a different free port: pick one for all.
    port = settings.port or free_port()
    shared_dir = tempfile.mkdtemp(
        prefix=f"elig-{settings.prefix}-", dir=SHM if SHM.is_dir() else None
    )
    pids: list[int] = []
    try:
        for index in range(settings.workers):
            pid = os.fork()
            if pid == 0:  # the worker
                code = 1
                try:
                    code = serve(worker_settings(settings, index, port, shared_dir))
                finally:
                    os._exit(code)
            pids.append(pid)
        log.info(
            "workers started",
            extra={"workers": settings.workers, "port": port, "pids": pids},
        )

        def forward(signum: int, frame: FrameType | None) -> None:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)

        signal.signal(signal.SIGINT, forward)
        signal.signal(signal.SIGTERM, forward)
        codes = []
        for pid in pids:
            _, status = os.waitpid(pid, 0)
            codes.append(os.waitstatus_to_exitcode(status))
        return next((code for code in codes if code != 0), 0)
    finally:
        shutil.rmtree(shared_dir, ignore_errors=True)
