"""``python -m gateway --workers 2``: two processes serve one port and share
one copy of the snapshot arrays (gateway.ops.workers, gateway.ops.shared_index)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import orjson

from gateway.ops.workers import worker_settings
from gateway.settings import Settings
from proto.eligibility.v1 import eligibility_pb2 as pb
from proto.eligibility.v1 import eligibility_pb2_grpc as pb_grpc
from tests.gateway_process import ROOT, GatewayProcess
from tests.test_e2e import DATE, hospital_claim, line, publish_sample


def _events(gateway: GatewayProcess) -> list[dict[str, object]]:
    out = []
    for raw in gateway.log().splitlines():
        try:
            out.append(orjson.loads(raw))
        except orjson.JSONDecodeError:
            continue
    return out


def _mapped_snapshot_files(pid: int) -> set[str]:
    """Snapshot files the process maps; a replaced one shows as "... (deleted)"."""
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return {m.split(maxsplit=5)[-1] for m in maps if "/snapshot-" in m}


def test_two_workers_share_the_port_and_the_index(redis_url: str, tmp_path: Path) -> None:
    prefix = "workers"
    publish_sample(redis_url, prefix, tmp_path)
    with GatewayProcess(redis_url, prefix, "--workers", "2") as gateway:
        deadline = time.monotonic() + 30
        while sum(e.get("msg") == "index loaded" for e in _events(gateway)) < 2:
            assert time.monotonic() < deadline, gateway.log()
            time.sleep(0.05)
        started = next(e for e in _events(gateway) if e.get("msg") == "workers started")
        pids = started["pids"]
        assert isinstance(pids, list) and len(pids) == 2
        # Both workers map the same file instead of each holding a copy.
        files = [_mapped_snapshot_files(int(pid)) for pid in pids]
        assert files[0] and files[0] == files[1]
        shared_dir = Path(next(iter(files[0]))).parent
        # Many connections: the kernel spreads them over both workers.
        for i in range(8):
            with grpc.insecure_channel(
                gateway.address, options=[("grpc.use_local_subchannel_pool", 1)]
            ) as channel:
                stub = pb_grpc.EligibilityGatewayStub(channel)
                response = stub.CheckClaim(
                    hospital_claim(f"W-{i}", line("D110105000001"), service_date=DATE),
                    timeout=10,
                )
                assert response.lines[0].decision == pb.DECISION_PAY
    assert gateway.proc is None
    assert not shared_dir.exists()


def test_a_worker_that_dies_is_replaced(redis_url: str, tmp_path: Path) -> None:
    prefix = "workers-replaced"
    publish_sample(redis_url, prefix, tmp_path)
    with GatewayProcess(redis_url, prefix, "--workers", "2") as gateway:
        started = next(e for e in _events(gateway) if e.get("msg") == "workers started")
        pids = started["pids"]
        assert isinstance(pids, list)
        victim = int(pids[0])
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not (
            replaced := [e for e in _events(gateway) if e.get("msg") == "worker died; replaced"]
        ):
            assert time.monotonic() < deadline, gateway.log()
            time.sleep(0.05)
        assert replaced[0]["pid"] == victim
        new_pid = int(str(replaced[0]["new_pid"]))
        # The replacement loads the index and serves the port again.
        while sum(e.get("msg") == "index loaded" for e in _events(gateway)) < 3:
            assert time.monotonic() < deadline, gateway.log()
            time.sleep(0.05)
        assert Path(f"/proc/{new_pid}").exists()
        assert gateway.proc is not None
        children = Path(f"/proc/{gateway.proc.pid}/task/{gateway.proc.pid}/children").read_text()
        assert sorted(int(c) for c in children.split()) == sorted([int(pids[1]), new_pid])
        with grpc.insecure_channel(gateway.address) as channel:
            response = pb_grpc.EligibilityGatewayStub(channel).CheckClaim(
                hospital_claim("W-after", line("D110105000001"), service_date=DATE), timeout=10
            )
        assert response.lines[0].decision == pb.DECISION_PAY
    assert gateway.proc is None


def test_no_second_gateway_joins_the_workers_on_their_port(redis_url: str, tmp_path: Path) -> None:
    """The workers share the port among themselves (SO_REUSEPORT) and with no
    one else: a second gateway, alone or with workers of its own, exits 1
    naming the port, and the first keeps every connection."""
    prefix = "workers-alone"
    publish_sample(redis_url, prefix, tmp_path)
    with GatewayProcess(redis_url, prefix, "--workers", "2", "--drain-s", "0") as gateway:
        for workers in ("1", "2"):
            second = subprocess.run(
                [sys.executable, "-m", "gateway", "--redis-url", redis_url, "--prefix", prefix,
                 "--allow-unsigned", "--host", "127.0.0.1", "--port", str(gateway.port),
                 "--workers", workers],
                cwd=ROOT, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert second.returncode == 1, second.stderr
            assert f"port {gateway.port} on 127.0.0.1 is in use (another gateway?)" in second.stderr
        with grpc.insecure_channel(gateway.address) as channel:
            response = pb_grpc.EligibilityGatewayStub(channel).CheckClaim(
                hospital_claim("W-alone", line("D110105000001"), service_date=DATE), timeout=10
            )
        assert response.lines[0].decision == pb.DECISION_PAY
        assert not any(e.get("msg") == "worker died; replaced" for e in _events(gateway))


def test_workers_need_a_redis_url() -> None:
    env = {k: v for k, v in os.environ.items() if k != "ELIG_REDIS_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "--workers", "2", "--port", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--workers: give --redis-url" in done.stderr


def test_each_worker_gets_its_own_metrics_port() -> None:
    settings = Settings(redis_url="redis://x", workers=3, metrics_port=9100)
    ports = [worker_settings(settings, i, 50051, "/dev/shm/x").metrics_port for i in range(3)]
    assert ports == [9100, 9101, 9102]
    assert worker_settings(settings, 1, 50051, "/dev/shm/x").shared_snapshot_dir == "/dev/shm/x"
