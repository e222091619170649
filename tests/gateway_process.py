"""The real gateway as a child process (``python -m gateway``), for the
end-to-end tests: they talk to it over gRPC on a loopback port only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.ops.redis_process import free_port

ROOT = Path(__file__).resolve().parent.parent


class GatewayProcess:
    """``redis_url`` None: the Redis flags are in ``extra_args`` (``--redis-sentinel``);
    ``port``: listen there (a gateway restarted where its clients know it)."""

    def __init__(
        self, redis_url: str | None, prefix: str, *extra_args: str, port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.args = [
            sys.executable,
            "-m",
            "gateway",
            *(["--redis-url", redis_url] if redis_url is not None else []),
            "--prefix", prefix,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--poll-interval-s", "0.2",
            # The tests publish unsigned data unless they are about signatures.
            *([] if "--trusted-keys" in extra_args else ["--allow-unsigned"]),
            # No drain window on stop unless a test is about it (5 s each otherwise).
            *([] if "--drain-s" in extra_args else ["--drain-s", "0"]),
            *extra_args,
        ]  # fmt: skip
        self.proc: subprocess.Popen[str] | None = None
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"gateway-{self.port}.log"

    def again(self) -> GatewayProcess:
        """A new, unstarted process with this one's command line and port (a restart)."""
        twin = GatewayProcess.__new__(GatewayProcess)
        twin.port, twin.address, twin.args = self.port, self.address, list(self.args)
        twin.proc = None
        twin.log_path = self.log_path.with_name(f"{self.log_path.stem}-again.log")
        return twin

    def start(self, *, wait_serving: bool = True, timeout_s: float = 30.0) -> GatewayProcess:
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            self.args, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, text=True
        )
        want = health_pb2.HealthCheckResponse.SERVING if wait_serving else None
        try:
            self.wait_health(want, timeout_s)
        except BaseException:
            self.stop()  # no process or open log file left behind by a failed start
            raise
        return self

    def health(self) -> int | None:
        """The overall health status, or None if the server does not answer."""
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                return int(stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status)
            except grpc.RpcError:
                return None

    def wait_health(self, want: int | None, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited {self.proc.returncode}: {self.log()}")
            status = self.health()
            if status is not None and (want is None or status == want):
                return
            time.sleep(0.05)
        raise TimeoutError(f"gateway not healthy ({want}) in {timeout_s} s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        code = self.proc.returncode
        self.proc = None
        return code

    def __enter__(self) -> GatewayProcess:
        return self if self.proc is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
