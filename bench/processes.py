"""Child processes for the benchmarks: a private redis-server with national
data published in it, and the real gateway (``python -m gateway``) pinned to
chosen cores, with its JSON log read back for what it reports."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import redis

from bench.national import NationalData
from contract.snapshot import Keys
from gateway.ops.redis_process import free_port
from loader.publish import publish_snapshot

ROOT = Path(__file__).resolve().parent.parent


def publish_national(url: str, prefix: str, data: NationalData) -> int:
    """Publish ``data`` under ``prefix`` with the loader's own publisher; return the version."""
    client = redis.Redis.from_url(url)
    try:
        meta = {"source": "bench.national", "practitioners": data.n_practitioners}
        return publish_snapshot(client, Keys(prefix), data.arrays, meta).version
    finally:
        client.close()


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (VmRSS), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def pinned(cores: str | None, argv: list[str]) -> list[str]:
    """``argv`` under ``taskset -c cores`` (as is when cores is None)."""
    return argv if cores is None else ["taskset", "-c", cores, *argv]


class GatewayChild:
    """``python -m gateway`` serving a Redis prefix on a free loopback port."""

    def __init__(
        self, redis_url: str, prefix: str, *, cores: str | None = None, extra: tuple[str, ...] = ()
    ) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-gateway-{self.port}.log"
        argv = [
            sys.executable, "-m", "gateway",
            "--redis-url", redis_url, "--prefix", prefix,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--poll-interval-s", "0.2", "--log-level", "INFO", "--allow-unsigned",
            "--drain-s", "0", *extra,
        ]  # fmt: skip
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            pinned(cores, argv), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self._log
        )

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_bytes().splitlines():
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
        return out

    def wait_event(self, msg: str, timeout_s: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for event in self.events():
                if event.get("msg") == msg:
                    return event
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.02)
        raise TimeoutError(f"no {msg!r} from the gateway in {timeout_s} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self.log_path.unlink(missing_ok=True)
