"""Fault injection under constant load (``python -m bench.fault_injection``).

Loopback only, bounded in time (``--duration``, 150 s by default). One
private redis-server (``gateway.ops.redis_process.RedisProcess``), the real
gateway with ``--workers 2`` (``python -m gateway``), the real loader CLI
(``python -m loader load`` / ``change``), and ``--clients`` load-generator
processes sending 1-5-line hospital claims at a constant rate each. While the
load runs, the controller:

- publishes full snapshots and live changes (each reassigns the status of
  some of the ``--doctors`` doctors: ACTIVE, SUSPENDED, TERMINATED or
  deregistered);
- stops Redis (after ``SAVE``, so it comes back with its data, as a Redis
  with persistence would) and starts it again, twice; while it is down a
  loader change is attempted and must be refused (exit 1, nothing
  published); right after it is back, a change is published;
- kills one gateway worker with SIGKILL (the other keeps the port).

Every answered line is checked against the decision expected from the data
the controller published, for the ``index_version`` that decided it (each
snapshot and each change is a version with its own expected table). Clients
retry UNAVAILABLE the way a gRPC client configured for it does (a service
config retry policy: 5 attempts, 50 ms-0.5 s backoff), so a call is FAILED
only if it still failed after those retries or its 2 s deadline.

Reported: calls sent, answered, failed (by status code), lines checked and
WRONG, and per fault the time to recover: for Redis, until every answer
reflects the change published right after the restart; for the killed
worker, the span of failed calls around it; for every publish, until every
answer carries its version.

    python -m bench.fault_injection [--duration 150] [--clients 3] [--rate 150]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from contract.days import today_cst
from gateway.ops.redis_process import RedisProcess, free_port
from proto.eligibility.v1 import eligibility_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
HOSPITAL = "H11010500001"
UNARY = "/eligibility.v1.EligibilityGateway/CheckClaim"
REGISTRY_HEADER = "practitioner_code,institution_code,role,registered_on,deregistered_on"
STATUS_HEADER = "practitioner_code,status,effective_from,effective_until,reference"
ACTIVE, SUSPENDED, TERMINATED, DEREGISTERED = range(4)
STATES = ("ACTIVE", "SUSPENDED", "TERMINATED", "DEREGISTERED")
# (decision, reason) of a hospital line at HOSPITAL on the service date, per state.
EXPECTED = {
    ACTIVE: (pb.DECISION_PAY, pb.REASON_OK),
    SUSPENDED: (pb.DECISION_REJECT, pb.REASON_SUSPENDED),
    TERMINATED: (pb.DECISION_REJECT, pb.REASON_TERMINATED),
    DEREGISTERED: (pb.DECISION_REJECT, pb.REASON_NOT_REGISTERED),
}
UNKNOWN = -1  # a doctor code nobody registered: NOT_REGISTERED in every version
MALFORMED = -2  # INVALID_PRESCRIBER_CODE in every version
RETRY_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "eligibility.v1.EligibilityGateway"}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)
CALL_DTYPE = np.dtype([("sent", "f8"), ("done", "f8"), ("code", "i2")])
LINE_DTYPE = np.dtype(
    [("call", "i4"), ("doctor", "i4"), ("version", "u8"), ("decision", "u1"), ("reason", "u1")]
)


def doctor_code(i: int) -> str:
    return f"D11010{i:07d}"


# ---------------------------------------------------------------------------
# Load-generator process


async def client_main(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    date = int(today_cst().strftime("%Y%m%d"))
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.service_config", RETRY_CONFIG)]
    channels = [
        grpc.aio.insecure_channel(args.address, options=options) for _ in range(args.channels)
    ]
    calls_ = [c.unary_unary(UNARY, None, None) for c in channels]
    n_calls = int(args.rate * args.duration)
    calls = np.zeros(n_calls, dtype=CALL_DTYPE)
    lines: list[tuple[int, int, int, int, int]] = []
    began = time.time()

    async def one(i: int) -> None:
        doctors = []
        for _ in range(rng.randint(1, 5)):
            roll = rng.random()
            doctors.append(
                UNKNOWN
                if roll < 0.02
                else MALFORMED
                if roll < 0.03
                else rng.randrange(args.doctors)
            )
        request = pb.CheckClaimRequest(
            claim_id=f"F-{args.seed}-{i}",
            institution_code=HOSPITAL,
            channel=pb.CHANNEL_HOSPITAL,
            service_date=date,
            lines=[
                pb.ClaimLine(
                    line_id=str(k),
                    prescriber_code=(
                        "D99999" + f"{k:07d}"
                        if d == UNKNOWN
                        else "D1101-BAD"
                        if d == MALFORMED
                        else doctor_code(d)
                    ),
                )
                for k, d in enumerate(doctors)
            ],
        )
        calls[i]["sent"] = time.time()
        try:
            raw = await calls_[i % len(calls_)](request.SerializeToString(), timeout=2.0)
        except grpc.aio.AioRpcError as exc:
            calls[i]["done"] = time.time()
            calls[i]["code"] = exc.code().value[0]
            return
        calls[i]["done"] = time.time()
        response = pb.CheckClaimResponse.FromString(raw)
        for d, decided in zip(doctors, response.lines, strict=True):
            lines.append((i, d, response.index_version, decided.decision, decided.reason))

    tasks: set[asyncio.Task[None]] = set()
    for i in range(n_calls):
        delay = began + i / args.rate - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks)
    for channel in channels:
        await channel.close(None)
    np.savez(
        args.out,
        calls=calls,
        lines=np.array(lines, dtype=LINE_DTYPE) if lines else np.zeros(0, LINE_DTYPE),
    )


# ---------------------------------------------------------------------------
# Controller


@dataclass
class Publication:
    kind: str  # "snapshot" or "change"
    version: int  # index_version
    at: float  # when the loader returned
    note: str = ""


@dataclass
class World:
    """What the controller published: the expected state of every doctor per index_version."""

    directory: Path
    redis_url: str
    prefix: str
    n_doctors: int
    rng: random.Random
    states: npt.NDArray[np.uint8] = field(init=False)
    by_version: dict[int, npt.NDArray[np.uint8]] = field(default_factory=dict)
    publications: list[Publication] = field(default_factory=list)
    refused_while_down: int = 0
    serial: int = 0

    def __post_init__(self) -> None:
        self.states = np.zeros(self.n_doctors, dtype=np.uint8)

    def _rows(self, doctors: list[int], states: npt.NDArray[np.uint8]) -> tuple[str, str]:
        today = today_cst()
        yesterday = (today - dt.timedelta(days=1)).isoformat()
        until = (today + dt.timedelta(days=30)).isoformat()
        registry, status = [REGISTRY_HEADER], [STATUS_HEADER]
        for d in doctors:
            code, state = doctor_code(d), int(states[d])
            ended = today.isoformat() if state == DEREGISTERED else ""
            registry.append(f"{code},{HOSPITAL},doctor,2015-01-01,{ended}")
            if state == SUSPENDED:
                status.append(f"{code},SUSPENDED,{yesterday},{until},F-{self.serial}")
            elif state == TERMINATED:
                status.append(f"{code},TERMINATED,{yesterday},,F-{self.serial}")
        return "\n".join(registry) + "\n", "\n".join(status) + "\n"

    def _files(self, doctors: list[int], states: npt.NDArray[np.uint8]) -> list[str]:
        self.serial += 1
        registry_text, status_text = self._rows(doctors, states)
        registry = self.directory / f"registry-{self.serial}.csv"
        status = self.directory / f"status-{self.serial}.csv"
        registry.write_text(registry_text, encoding="utf-8")
        status.write_text(status_text, encoding="utf-8")
        return ["--registry", str(registry), "--status", str(status)]

    def _loader(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "loader", *argv,
             "--redis-url", self.redis_url, "--prefix", self.prefix],
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    def _draw(self, count: int) -> npt.NDArray[np.uint8]:
        # Mostly ACTIVE, as in real data, but every state well represented.
        return np.array(
            self.rng.choices(range(4), weights=[70, 12, 8, 10], k=count), dtype=np.uint8
        )

    def publish_snapshot(self) -> Publication:
        states = self._draw(self.n_doctors)
        proc = self._loader("load", *self._files(list(range(self.n_doctors)), states))
        if proc.returncode != 0:
            raise RuntimeError(f"loader load failed: {proc.stderr}")
        match = re.search(r"published version (\d+)", proc.stdout)
        assert match, proc.stdout
        version = int(match.group(1)) * 10**9
        self.states = states
        self.by_version[version] = states.copy()
        return self._published("snapshot", version)

    def publish_change(self, note: str = "") -> Publication | None:
        """A change of 1-5 doctors; None if the loader refused (Redis down): exit 1."""
        doctors = self.rng.sample(range(self.n_doctors), self.rng.randint(1, 5))
        states = self.states.copy()
        states[doctors] = self._draw(len(doctors))
        proc = self._loader("change", *self._files(doctors, states))
        if proc.returncode == 1:
            self.refused_while_down += 1
            return None
        if proc.returncode != 0:
            raise RuntimeError(f"loader change failed: {proc.stderr}")
        match = re.search(r"index_version (\d+)", proc.stdout)
        assert match, proc.stdout
        version = int(match.group(1))
        self.states = states
        self.by_version[version] = states.copy()
        return self._published("change", version, note)

    def _published(self, kind: str, version: int, note: str = "") -> Publication:
        publication = Publication(kind, version, time.time(), note)
        self.publications.append(publication)
        log(f"published {kind} {version} {note}")
        return publication


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def worker_pids(parent: int) -> list[int]:
    path = Path(f"/proc/{parent}/task/{parent}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def wait_serving(address: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise TimeoutError(f"gateway at {address} not SERVING in {timeout_s} s")


@dataclass
class Fault:
    kind: str
    at: float
    back_at: float | None = None
    follow_up: Publication | None = None
    detail: str = ""


def run_schedule(
    world: World, redis_server: RedisProcess, gateway: subprocess.Popen[bytes], duration: float
) -> list[Fault]:
    """Faults and publications at fixed fractions of the run."""
    faults: list[Fault] = []
    start = time.time()

    def at(fraction: float) -> None:
        delay = start + fraction * duration - time.time()
        if delay > 0:
            time.sleep(delay)

    def redis_outage(down_s: float) -> None:
        client = redis.Redis.from_url(world.redis_url)
        client.save()  # comes back with its data, like a Redis with persistence
        client.close()
        fault = Fault("redis stopped", time.time())
        redis_server.stop()
        log(f"redis stopped for {down_s:.0f} s")
        time.sleep(down_s / 2)
        if world.publish_change() is None:
            fault.detail = "a loader change while Redis was down was refused (exit 1)"
        time.sleep(down_s / 2)
        redis_server.start()
        fault.back_at = time.time()
        log("redis started again")
        fault.follow_up = world.publish_change("right after the Redis restart")
        faults.append(fault)

    def changes(until: float, every: float) -> None:
        while time.time() < start + until * duration:
            world.publish_change()
            time.sleep(every)

    at(0.05)
    changes(0.20, 2.0)
    at(0.20)
    redis_outage(max(duration * 0.04, 3.0))
    at(0.35)
    world.publish_snapshot()
    changes(0.50, 1.5)
    at(0.50)
    pids = worker_pids(gateway.pid)
    if pids:
        os.kill(pids[0], signal.SIGKILL)
        faults.append(Fault("worker killed (SIGKILL)", time.time(), detail=f"pid {pids[0]}"))
        log(f"killed worker {pids[0]}; {len(worker_pids(gateway.pid))} left")
    changes(0.65, 1.5)
    at(0.65)
    redis_outage(max(duration * 0.07, 5.0))
    at(0.80)
    world.publish_snapshot()
    changes(0.92, 1.5)
    return faults


def analyse(
    world: World, faults: list[Fault], results: list[Path], load_ends: float
) -> dict[str, Any]:
    calls = np.concatenate([np.load(p)["calls"] for p in results])
    offset = 0
    parts = []
    for p in results:  # call indexes are per client: make them global
        data = np.load(p)
        part = data["lines"].copy()
        part["call"] += offset
        offset += len(data["calls"])
        parts.append(part)
    lines = np.concatenate(parts)
    sent = len(calls)
    failed = calls["code"] != 0
    codes: dict[str, int] = {}
    for value in calls["code"][failed]:
        name = next(c.name for c in grpc.StatusCode if c.value[0] == int(value))
        codes[name] = codes.get(name, 0) + 1

    wrong = 0
    unknown_version = 0
    examples: list[str] = []
    for version in np.unique(lines["version"]):
        table = world.by_version.get(int(version))
        mine = lines[lines["version"] == version]
        if table is None:
            unknown_version += len(mine)
            continue
        for d, decision, reason in zip(
            mine["doctor"], mine["decision"], mine["reason"], strict=True
        ):
            if d == UNKNOWN:
                want = (pb.DECISION_REJECT, pb.REASON_NOT_REGISTERED)
            elif d == MALFORMED:
                want = (pb.DECISION_REJECT, pb.REASON_INVALID_PRESCRIBER_CODE)
            else:
                want = EXPECTED[int(table[d])]
            if (int(decision), int(reason)) != want:
                wrong += 1
                if len(examples) < 5:
                    examples.append(
                        f"v{int(version)} doctor {d}: got {decision}/{reason}, want {want}"
                    )

    call_version = np.zeros(sent, dtype=np.uint64)
    call_version[lines["call"]] = lines["version"]
    answered = ~failed

    def all_answers_carry(publication: Publication) -> float | None:
        """Seconds after the loader returned until no answer carried an older version."""
        after = answered & (calls["sent"] > publication.at)
        stale = after & (call_version < publication.version)
        if not after.any():
            return None
        return float(max(calls["done"][stale].max() - publication.at, 0.0)) if stale.any() else 0.0

    fault_rows = []
    for fault in faults:
        window = (calls["sent"] >= fault.at - 1) & (
            calls["sent"] <= (fault.back_at or fault.at) + 10
        )
        failed_here = failed & window
        row: dict[str, Any] = {
            "fault": fault.kind,
            "at_s": round(fault.at - float(calls["sent"].min()), 1),
            "failed_calls": int(failed_here.sum()),
            "detail": fault.detail,
        }
        if fault.back_at is not None:
            row["down_s"] = round(fault.back_at - fault.at, 1)
            answered_while_down = (
                answered & (calls["sent"] >= fault.at) & (calls["done"] <= fault.back_at)
            )
            row["answered_while_down"] = int(answered_while_down.sum())
        if fault.follow_up is not None:
            caught_up = all_answers_carry(fault.follow_up)
            row["recovery_s"] = (
                None
                if caught_up is None
                else round(fault.follow_up.at - fault.back_at + caught_up, 3)  # type: ignore[operator]
            )
            row["after_loader_returned_s"] = None if caught_up is None else round(caught_up, 3)
            row["recovery_means"] = (
                "Redis back -> every answer carries the change published right after "
                "(includes the loader's own run, ~1 s of it Python start-up)"
            )
        else:
            row["recovery_s"] = (
                round(float(calls["done"][failed_here].max() - fault.at), 3)
                if failed_here.any()
                else 0.0
            )
            row["recovery_means"] = "fault -> last failed call (0: none failed)"
        fault_rows.append(row)

    propagation = [
        s
        for p in world.publications
        if p.at < load_ends - 3 and (s := all_answers_carry(p)) is not None
    ]
    latencies = (calls["done"] - calls["sent"])[answered]
    return {
        "calls_sent": sent,
        "calls_answered": int(answered.sum()),
        "calls_failed": int(failed.sum()),
        "failed_by_code": codes,
        "lines_checked": len(lines),
        "lines_wrong": wrong,
        "lines_with_unknown_version": unknown_version,
        "wrong_examples": examples,
        "versions_published": len(world.by_version),
        "snapshots": sum(p.kind == "snapshot" for p in world.publications),
        "changes": sum(p.kind == "change" for p in world.publications),
        "loader_refused_while_redis_down": world.refused_while_down,
        "faults": fault_rows,
        "publish_to_every_answer_s": {
            "count": len(propagation),
            "p50": round(float(np.percentile(propagation, 50)), 3) if propagation else None,
            "max": round(max(propagation), 3) if propagation else None,
        },
        "latency_ms": {
            "p50": round(float(np.percentile(latencies, 50)) * 1e3, 2),
            "p99": round(float(np.percentile(latencies, 99)) * 1e3, 2),
            "max": round(float(latencies.max()) * 1e3, 2),
        },
    }


def controller(args: argparse.Namespace) -> int:
    directory = Path(tempfile.mkdtemp(prefix="fault-injection-"))
    redis_server = RedisProcess().start()
    gateway: subprocess.Popen[bytes] | None = None
    clients: list[subprocess.Popen[bytes]] = []
    try:
        world = World(directory, redis_server.url, "faults", args.doctors, random.Random(args.seed))
        world.publish_snapshot()
        port = free_port()
        address = f"127.0.0.1:{port}"
        gateway_log = (directory / "gateway.log").open("wb")
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--redis-url", redis_server.url,
             "--prefix", "faults", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "2", "--poll-interval-s", "0.2", "--allow-unsigned",
             "--drain-s", "0"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=gateway_log,
        )  # fmt: skip
        wait_serving(address)
        time.sleep(1.0)  # both workers load the snapshot
        log(f"gateway on {address}, workers {worker_pids(gateway.pid)}")
        results = [directory / f"client-{k}.npz" for k in range(args.clients)]

        def client_argv(k: int) -> list[str]:
            return [
                sys.executable, "-m", "bench.fault_injection", "client",
                "--address", address, "--rate", str(args.rate),
                "--duration", str(args.duration), "--doctors", str(args.doctors),
                "--seed", str(args.seed + k + 1), "--out", str(results[k]),
            ]  # fmt: skip

        clients = [subprocess.Popen(client_argv(k), cwd=ROOT) for k in range(args.clients)]
        time.sleep(2.0)  # clients connected
        faults = run_schedule(world, redis_server, gateway, args.duration)
        load_ends = time.time()
        for proc in clients:
            proc.wait(timeout=args.duration + 120)
        bad = [p.returncode for p in clients if p.returncode != 0]
        if bad:
            raise RuntimeError(f"load-generator processes failed: {bad}")
        report = analyse(world, faults, results, load_ends)
        report["workers_alive_at_end"] = len(worker_pids(gateway.pid))
        report["gateway_still_serving"] = gateway.poll() is None
        report["command"] = " ".join(["python -m bench.fault_injection", *sys.argv[1:]])
        text = json.dumps(report, indent=2, ensure_ascii=False)
        print(text)
        if args.json:
            Path(args.json).write_text(text + "\n")
        ok = report["lines_wrong"] == 0 and report["lines_with_unknown_version"] == 0
        return 0 if ok else 1
    finally:
        for proc in clients:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if gateway is not None and gateway.poll() is None:
            gateway.send_signal(signal.SIGTERM)
            try:
                gateway.wait(timeout=20)
            except subprocess.TimeoutExpired:
                gateway.kill()
                gateway.wait()
        redis_server.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="role")
    client = sub.add_parser("client", help="(internal) one load-generator process")
    client.add_argument("--address", required=True)
    client.add_argument("--rate", type=float, required=True)
    client.add_argument("--duration", type=float, required=True)
    client.add_argument("--doctors", type=int, required=True)
    client.add_argument("--seed", type=int, required=True)
    client.add_argument("--out", required=True)
    client.add_argument("--channels", type=int, default=4)
    parser.add_argument("--duration", type=float, default=150.0, help="seconds of load")
    parser.add_argument("--clients", type=int, default=3, help="load-generator processes")
    parser.add_argument("--rate", type=float, default=150.0, help="claims/s per client")
    parser.add_argument("--doctors", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    if args.role == "client":
        asyncio.run(client_main(args))
        return 0
    return controller(args)


if __name__ == "__main__":
    sys.exit(main())
