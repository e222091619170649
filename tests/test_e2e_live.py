"""Live changes and fail-static end to end: the real gateway (``python -m gateway``
in a child process, called over gRPC), the real loader CLI, real redis-servers.

- a change published with ``python -m loader change`` is enforced;
- Redis stopped and restarted under load: no request fails, the gateway
  catches up (its own redis-server, so the session's stays up);
- a trimmed stream makes the gateway reload, and it misses no change;
- a loader killed with SIGKILL mid-publish changes nothing gateways see, and
  the next run cleans its partial writes up;
- a gateway started while Redis is down serves from its disk cache.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2

from contract.changes import index_version
from contract.days import today_cst
from contract.snapshot import Keys
from gateway.ops.redis_process import RedisProcess, free_port
from loader.cli import main as loader_main
from proto.eligibility.v1 import eligibility_pb2 as pb
from proto.eligibility.v1 import eligibility_pb2_grpc as pb_grpc
from tests.gateway_process import ROOT, GatewayProcess

TODAY = today_cst()
DATE = int(TODAY.strftime("%Y%m%d"))
HOSPITAL = "H11010500001"
DOCTORS = [f"D1101050000{i:02d}" for i in range(1, 7)]
REGISTRY_HEADER = "practitioner_code,institution_code,role,registered_on,deregistered_on"
STATUS_HEADER = "practitioner_code,status,effective_from,effective_until,reference"


def iso(days: int) -> str:
    return (TODAY + dt.timedelta(days=days)).isoformat()


def write(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def load_files(directory: Path, doctors: list[str]) -> list[str]:
    """Registry and (empty) status feed for ``doctors``, as loader arguments."""
    directory.mkdir(parents=True, exist_ok=True)
    registry = write(
        directory / "registry.csv",
        REGISTRY_HEADER,
        [f"{code},{HOSPITAL},doctor,2015-01-01," for code in doctors],
    )
    status = write(directory / "status.csv", STATUS_HEADER, [])
    return ["--registry", str(registry), "--status", str(status)]


def suspend_files(directory: Path, code: str, reference: str) -> list[str]:
    """A change file: ``code``'s complete new record, suspended from yesterday."""
    directory.mkdir(parents=True, exist_ok=True)
    registry = write(
        directory / f"registry-{reference}.csv",
        REGISTRY_HEADER,
        [f"{code},{HOSPITAL},doctor,2015-01-01,"],
    )
    status = write(
        directory / f"status-{reference}.csv",
        STATUS_HEADER,
        [f"{code},SUSPENDED,{iso(-1)},{iso(30)},{reference}"],
    )
    return ["--registry", str(registry), "--status", str(status)]


def loader(url: str, prefix: str, *argv: str) -> None:
    assert loader_main([*argv, "--redis-url", url, "--prefix", prefix]) == 0


def claim(code: str, claim_id: str = "C-1") -> pb.CheckClaimRequest:
    return pb.CheckClaimRequest(
        claim_id=claim_id,
        institution_code=HOSPITAL,
        channel=pb.CHANNEL_HOSPITAL,
        service_date=DATE,
        lines=[pb.ClaimLine(line_id="1", prescriber_code=code)],
    )


def wait_for(
    stub: pb_grpc.EligibilityGatewayStub, code: str, reason: int, timeout_s: float = 10.0
) -> pb.CheckClaimResponse:
    deadline = time.monotonic() + timeout_s
    while True:
        response = stub.CheckClaim(claim(code), timeout=5)
        if response.lines[0].reason == reason:
            return response
        assert time.monotonic() < deadline, f"{code} never got reason {reason}: {response}"
        time.sleep(0.01)


@pytest.fixture
def gateway_stub(
    redis_url: str, prefix: str, tmp_path: Path
) -> Iterator[tuple[GatewayProcess, pb_grpc.EligibilityGatewayStub]]:
    loader(redis_url, prefix, "load", *load_files(tmp_path / "base", DOCTORS))
    with (
        GatewayProcess(redis_url, prefix) as gateway,
        grpc.insecure_channel(gateway.address) as channel,
    ):
        yield gateway, pb_grpc.EligibilityGatewayStub(channel)


def test_a_published_change_is_enforced_by_the_running_gateway(
    gateway_stub: tuple[GatewayProcess, pb_grpc.EligibilityGatewayStub],
    redis_url: str,
    redis_client: redis.Redis,
    prefix: str,
    tmp_path: Path,
) -> None:
    _, stub = gateway_stub
    version = int(redis_client.get(Keys(prefix).current) or 0)
    before = stub.CheckClaim(claim(DOCTORS[0]), timeout=5)
    assert (before.index_version, before.lines[0].reason) == (
        index_version(version, 0),
        pb.REASON_OK,
    )
    loader(redis_url, prefix, "change", *suspend_files(tmp_path / "c", DOCTORS[0], "R-1"))
    after = wait_for(stub, DOCTORS[0], pb.REASON_SUSPENDED)
    assert after.index_version == index_version(version, 1)
    assert after.lines[0].decision == pb.DECISION_REJECT
    assert after.lines[0].status_until == int((TODAY + dt.timedelta(days=30)).strftime("%Y%m%d"))
    status = stub.GetPractitionerStatus(
        pb.GetPractitionerStatusRequest(practitioner_code=DOCTORS[0]), timeout=5
    )
    assert (status.status, status.index_version) == (pb.STATUS_SUSPENDED, after.index_version)
    others = stub.CheckClaim(claim(DOCTORS[1]), timeout=5)
    assert others.lines[0].reason == pb.REASON_OK


def test_a_trimmed_stream_makes_the_gateway_reload_and_miss_nothing(
    gateway_stub: tuple[GatewayProcess, pb_grpc.EligibilityGatewayStub],
    redis_url: str,
    redis_client: redis.Redis,
    prefix: str,
    tmp_path: Path,
) -> None:
    gateway, stub = gateway_stub
    assert gateway.proc is not None
    version = int(redis_client.get(Keys(prefix).current) or 0)
    os.kill(gateway.proc.pid, signal.SIGSTOP)  # a gateway that falls behind
    try:
        for n, code in enumerate(DOCTORS[:3]):
            loader(redis_url, prefix, "change", *suspend_files(tmp_path, code, f"R-{n}"))
        redis_client.xtrim(Keys(prefix).changes, maxlen=0, approximate=False)
    finally:
        os.kill(gateway.proc.pid, signal.SIGCONT)
    for code in DOCTORS[:3]:
        response = wait_for(stub, code, pb.REASON_SUSPENDED)
    assert response.index_version == index_version(version, 3)
    log = gateway.log_path.read_text()
    assert "lost place in the change stream" in log


class CuttingProxy:
    """A TCP proxy to Redis that forwards a client's commands until one contains
    ``cut_at``, then holds that and everything after it: the loader behind it
    is stuck at a known point of its publication, to be killed there."""

    def __init__(self, redis_port: int, cut_at: bytes) -> None:
        self.redis_port = redis_port
        self.cut_at = cut_at
        self.cut = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.redis_port))
            self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, watch: bool) -> None:
        tail = b""
        try:
            while data := source.recv(65536):
                if watch and (self.cut.is_set() or self.cut_at in tail + data):
                    self.cut.set()
                    continue  # held: never reaches Redis
                tail = data[-len(self.cut_at) :]
                sink.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


@pytest.mark.parametrize(
    "cut_at", [b":manifest\r\n", b"\r\nEVAL\r\n"], ids=["before-manifest", "before-flip"]
)
def test_a_loader_killed_mid_publish_changes_nothing_gateways_see(
    gateway_stub: tuple[GatewayProcess, pb_grpc.EligibilityGatewayStub],
    redis_server: RedisProcess,
    redis_url: str,
    redis_client: redis.Redis,
    prefix: str,
    tmp_path: Path,
    cut_at: bytes,
) -> None:
    _, stub = gateway_stub
    keys = Keys(prefix)
    current = int(redis_client.get(keys.current) or 0)
    before = stub.CheckClaim(claim(DOCTORS[0]), timeout=5)
    proxy = CuttingProxy(redis_server.port, cut_at)
    argv = load_files(tmp_path / "next", DOCTORS[1:])  # DOCTORS[0] would be unknown
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "loader", "load", *argv,
             "--redis-url", f"redis://127.0.0.1:{proxy.port}/0", "--prefix", prefix],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            assert proxy.cut.wait(60), "the loader never reached the cut point"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    finally:
        proxy.close()
    killed = int(redis_client.get(keys.seq) or 0)
    assert killed > current
    assert int(redis_client.get(keys.current) or 0) == current
    partial = list(redis_client.scan_iter(match=f"{prefix}:snapshot:{killed}:*"))
    assert partial, "the killed run wrote nothing: the cut point is wrong"
    time.sleep(0.3)  # more than the gateway's poll interval
    after = stub.CheckClaim(claim(DOCTORS[0]), timeout=5)
    assert (after.index_version, after.lines[0].reason) == (
        before.index_version,
        before.lines[0].reason,
    )

    loader(redis_url, prefix, "load", *argv)
    assert list(redis_client.scan_iter(match=f"{prefix}:snapshot:{killed}:*")) == []
    now = int(redis_client.get(keys.current) or 0)
    assert now > killed
    response = wait_for(stub, DOCTORS[0], pb.REASON_NOT_REGISTERED)
    assert response.index_version == index_version(now, 0)


class ClaimLoad:
    """Claims sent back to back from a thread; every failure is kept."""

    def __init__(self, address: str, code: str) -> None:
        self.address = address
        self.code = code
        self.sent = 0
        self.failures: list[str] = []
        self.reasons: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ClaimLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with grpc.insecure_channel(self.address) as channel:
            stub = pb_grpc.EligibilityGatewayStub(channel)
            while not self._stop.is_set():
                try:
                    response = stub.CheckClaim(claim(self.code, f"L-{self.sent}"), timeout=5)
                    self.reasons.add(response.lines[0].reason)
                except grpc.RpcError as exc:
                    self.failures.append(f"{exc.code()}: {exc.details()}")
                self.sent += 1


@pytest.mark.slow
def test_redis_stopped_and_restarted_under_load_loses_no_request(
    prefix: str, tmp_path: Path
) -> None:
    with RedisProcess() as own:
        client = redis.Redis.from_url(own.url)
        try:
            loader(own.url, prefix, "load", *load_files(tmp_path / "base", DOCTORS))
            with (
                GatewayProcess(own.url, prefix) as gateway,
                ClaimLoad(gateway.address, DOCTORS[0]) as load,
            ):
                time.sleep(0.3)
                client.save()  # keep the data across the restart (persistence is off)
                own.stop()
                time.sleep(1.0)  # fail-static: deciding from the held index
                during = load.sent
                own.start()
                loader(own.url, prefix, "change", *suspend_files(tmp_path, DOCTORS[0], "R-1"))
                with grpc.insecure_channel(gateway.address) as channel:
                    wait_for(
                        pb_grpc.EligibilityGatewayStub(channel), DOCTORS[0], pb.REASON_SUSPENDED
                    )
                assert gateway.health() == health_pb2.HealthCheckResponse.SERVING
            log = gateway.log_path.read_text()
        finally:
            client.close()
    assert load.failures == []
    assert during > 0 and load.sent > during
    assert load.reasons == {pb.REASON_OK, pb.REASON_SUSPENDED}
    assert "deciding from the held index (stale)" in log
    assert '"stale_since"' in log
    assert "redis reachable" in log


def test_a_gateway_started_while_redis_is_down_serves_from_its_disk_cache(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    loader(redis_url, prefix, "load", *load_files(tmp_path / "base", DOCTORS))
    with (
        GatewayProcess(redis_url, prefix, "--snapshot-cache-dir", str(cache)) as gateway,
        grpc.insecure_channel(gateway.address) as channel,
    ):
        loader(redis_url, prefix, "change", *suspend_files(tmp_path, DOCTORS[0], "R-1"))
        expected = wait_for(
            pb_grpc.EligibilityGatewayStub(channel), DOCTORS[0], pb.REASON_SUSPENDED
        )
        deadline = time.monotonic() + 10
        while (
            not (cache / "overlay.bin").exists()
            or b'"change_seq":1' not in (cache / "overlay.bin").read_bytes()[:4096]
        ):
            assert time.monotonic() < deadline, "the disk cache was not written"
            time.sleep(0.05)

    dead = f"redis://127.0.0.1:{free_port()}/0"
    with (
        GatewayProcess(dead, prefix, "--snapshot-cache-dir", str(cache)) as cold,
        grpc.insecure_channel(cold.address) as channel,
    ):
        stub = pb_grpc.EligibilityGatewayStub(channel)
        response = stub.CheckClaim(claim(DOCTORS[0]), timeout=5)
        assert response.index_version == expected.index_version
        assert response.lines[0].reason == pb.REASON_SUSPENDED
        assert stub.CheckClaim(claim(DOCTORS[1]), timeout=5).lines[0].reason == pb.REASON_OK
        log = cold.log_path.read_text()
    assert "deciding from the disk cache (stale)" in log
    assert '"saved_at"' in log
