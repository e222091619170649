"""A loopback Redis replication group with Sentinel, for the cluster test and the
failover benchmark: a primary, replicas (``--replicaof``) and Sentinels
(``redis-server --sentinel`` with a generated config), each its own process on
a free 127.0.0.1 port, in one directory. Never the machine's own Redis.

Timings are small so that a failover takes seconds: a node that does not
answer for ``down_after_ms`` (500) is down, and a failover may be retried
after ``failover_timeout_ms``.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis

from contract.redis_target import online_replicas
from gateway.ops.redis_process import free_port

MASTER_NAME = "elig"


class Cluster:
    def __init__(
        self,
        directory: Path,
        *,
        replicas: int = 1,
        sentinels: int = 3,
        down_after_ms: int = 500,
        failover_timeout_ms: int = 2000,
        master_name: str = MASTER_NAME,
    ) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.master_name = master_name
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.node_ports = [free_port() for _ in range(1 + replicas)]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.nodes: dict[int, subprocess.Popen[bytes]] = {}
        self.sentinels: dict[int, subprocess.Popen[bytes]] = {}

    # -- where ------------------------------------------------------------------------

    @property
    def sentinel_spec(self) -> str:
        """The ``--redis-sentinel`` value: every Sentinel, host:port,..."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)

    def primary_port(self) -> int | None:
        """The primary's port as the first Sentinel that answers says (None: none does)."""
        for port in self.sentinel_ports:
            if port not in self.sentinels:
                continue
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5)
            try:
                address = client.sentinel_get_master_addr_by_name(self.master_name)
            except redis.RedisError:
                continue
            finally:
                client.close()
            if isinstance(address, tuple | list) and address:
                return int(address[1])
        return None

    # -- start, kill, stop -----------------------------------------------------------------

    def start(self, timeout_s: float = 20.0) -> Cluster:
        primary, *replicas = self.node_ports
        self.start_node(primary)
        for port in replicas:
            self.start_node(port, replica_of=primary)
        for port in self.sentinel_ports:
            self._start_sentinel(port, primary)
        self.wait_ready(timeout_s)
        return self

    def start_node(self, port: int, replica_of: int | None = None) -> None:
        args = [
            "redis-server",
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--dbfilename", f"node-{port}.rdb",
            "--logfile", str(self.dir / f"node-{port}.log"),
            # A new replica's first sync starts at once, not after 5 s.
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        if replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(replica_of)]
        self.nodes[port] = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._wait_ping(port)

    def _start_sentinel(self, port: int, primary: int) -> None:
        config = self.dir / f"sentinel-{port}.conf"  # Sentinel rewrites its own config
        config.write_text(
            f"port {port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.dir}\n"
            f"sentinel monitor {self.master_name} 127.0.0.1 {primary} 2\n"
            f"sentinel down-after-milliseconds {self.master_name} {self.down_after_ms}\n"
            f"sentinel failover-timeout {self.master_name} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {self.master_name} 1\n"
        )
        self.sentinels[port] = subprocess.Popen(
            [
                "redis-server", str(config), "--sentinel",
                "--logfile", str(self.dir / f"sentinel-{port}.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self._wait_ping(port)

    def wait_ready(self, timeout_s: float) -> None:
        """Until every Sentinel knows the primary, every replica (in sync) and the others."""
        deadline = time.monotonic() + timeout_s
        replicas = len(self.node_ports) - 1
        while True:
            sentinels_agree = all(
                self._sentinel_sees_all(port, replicas) for port in self.sentinel_ports
            )
            if sentinels_agree and self.online_replicas() >= replicas:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Sentinel group did not form: {self.logs()}")
            time.sleep(0.05)

    def _sentinel_sees_all(self, port: int, replicas: int) -> bool:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5)
        try:
            state = client.sentinel_master(self.master_name)
        except redis.RedisError:
            return False
        finally:
            client.close()
        others = len(self.sentinel_ports) - 1
        assert isinstance(state, dict)
        return bool(
            int(state["num-slaves"]) >= replicas and int(state["num-other-sentinels"]) >= others
        )

    def online_replicas(self) -> int:
        port = self.primary_port()
        if port is None:
            return 0
        client = self.node(port)
        try:
            return online_replicas(client.info("replication"))
        except redis.RedisError:
            return 0
        finally:
            client.close()

    def kill_node(self, port: int) -> None:
        """SIGKILL: no shutdown, no last words to the replicas."""
        proc = self.nodes.pop(port)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def wait_promotion(self, old_primary: int, timeout_s: float = 30.0) -> tuple[int, float]:
        """Poll the Sentinels until one names a new primary that says it is one;
        (its port, time.monotonic() then)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            port = self.primary_port()
            if port is not None and port != old_primary and self._is_master(port):
                return port, time.monotonic()
            time.sleep(0.01)
        raise TimeoutError(f"no replica was promoted in {timeout_s} s: {self.logs()}")

    def _is_master(self, port: int) -> bool:
        client = self.node(port)
        try:
            role = client.execute_command("ROLE")  # type: ignore[no-untyped-call]
        except redis.RedisError:
            return False
        finally:
            client.close()
        return bool(role) and role[0] in (b"master", "master")

    def for_each_node(self, *command: str) -> None:
        """Run ``command`` on every running data node (ACL is not replicated)."""
        for port in self.nodes:
            client = self.node(port)
            try:
                client.execute_command(*command)  # type: ignore[no-untyped-call]
            finally:
                client.close()

    def _wait_ping(self, port: int, timeout_s: float = 10.0) -> None:
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis-server on {port} did not start: {self.logs()}")
                time.sleep(0.02)
        finally:
            client.close()

    def logs(self) -> str:
        tails = []
        for path in sorted(self.dir.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-8:]
            tails.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(tails)

    def stop(self) -> None:
        for proc in [*self.sentinels.values(), *self.nodes.values()]:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self.sentinels.clear()
        self.nodes.clear()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
