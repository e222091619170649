"""Soak test: constant load for a long time (``python -m bench.soak``).

    python -m bench.soak [--minutes 10] [--rate 300] [--clients 2] [--practitioners 1000000]

A private redis-server with the national synthetic data set
(``bench.national``), the real gateway (``python -m gateway``, one process),
and ``--clients`` load-generator processes sending a fixed mix of claims
(80 % pharmacy baskets of 1-5 lines, 20 % hospital settlements of 20-200
lines) open-loop at a constant total ``--rate`` per second: calls go out on
schedule whether or not earlier ones were answered, so a server that slows
down shows in the latencies. Every ``--change-every`` seconds the loader
publishes a live change (one practitioner suspended or reinstated), as in
production.

Reported per minute: calls answered and failed, p50/p99/max latency, the
gateway's RSS, open file descriptors and threads. Then the memory growth
(first minute to last, and the slope of a least-squares line over the
samples after the first minute, in MB/hour) and the latency drift (last
minute against the first).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import redis

from bench.loadgen import read_requests, write_requests
from bench.national import ClaimGenerator, national_data
from bench.processes import ROOT, GatewayChild, publish_national, rss_bytes
from contract import codes
from contract.days import today_cst
from contract.snapshot import Keys
from gateway.ops.redis_process import RedisProcess
from loader.changes import publish_change
from loader.pipeline import build_snapshot, read_inputs

UNARY = "/eligibility.v1.EligibilityGateway/CheckClaim"
REGISTRY_HEADER = "practitioner_code,institution_code,role,registered_on,deregistered_on"
STATUS_HEADER = "practitioner_code,status,effective_from,effective_until,reference"


# ---------------------------------------------------------------------------
# Load-generator process: one JSON line per minute into --out


async def client_main(args: argparse.Namespace) -> None:
    requests = read_requests(Path(args.requests))
    channels = [grpc.aio.insecure_channel(args.address) for _ in range(2)]
    calls = [c.unary_unary(UNARY, None, None) for c in channels]
    began = time.time()
    minutes = int(args.minutes)
    latencies: list[list[float]] = [[] for _ in range(minutes)]
    failed = [0] * minutes
    in_flight: set[asyncio.Task[None]] = set()

    async def one(i: int, due: float) -> None:
        minute = int((due - began) // 60)
        sent = time.time()
        try:
            await calls[i % 2](requests[i % len(requests)], timeout=10)
        except grpc.aio.AioRpcError:
            failed[minute] += 1
            return
        latencies[minute].append(time.time() - sent)

    i = 0
    end = began + minutes * 60
    while (due := began + i / args.rate) < end:
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(i, due))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        i += 1
    if in_flight:
        await asyncio.wait(in_flight)
    for channel in channels:
        await channel.close(None)
    with Path(args.out).open("w") as out:
        for minute in range(minutes):
            sample = np.array(latencies[minute]) if latencies[minute] else np.zeros(1)
            row = {
                "minute": minute + 1,
                "answered": len(latencies[minute]),
                "failed": failed[minute],
                "latencies_ms": [round(x * 1e3, 3) for x in sample.tolist()],
            }
            out.write(json.dumps(row) + "\n")


# ---------------------------------------------------------------------------
# Controller


def publish_one_change(url: str, prefix: str, code: str, suspend: bool, directory: Path) -> None:
    """The loader's own change path: files -> validation -> arrays -> publish_change."""
    today = today_cst()
    registry = directory / "change-registry.csv"
    registry.write_text(f"{REGISTRY_HEADER}\n{code},H11010500000,doctor,2015-01-01,\n")
    status = directory / "change-status.csv"
    row = (
        f"{code},SUSPENDED,{today.isoformat()},{(today + dt.timedelta(days=30)).isoformat()},S-1\n"
        if suspend
        else ""
    )
    status.write_text(f"{STATUS_HEADER}\n{row}")
    arrays, _ = build_snapshot(read_inputs(registry, status))
    client = redis.Redis.from_url(url)
    try:
        publish_change(client, Keys(prefix), arrays)
    finally:
        client.close()


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_count(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def summarise(per_minute: list[dict[str, Any]], samples: list[tuple[float, int]]) -> dict[str, Any]:
    first, last = per_minute[0], per_minute[-1]
    after_first = [(t, r) for t, r in samples if t >= 60]
    slope = 0.0
    if len(after_first) >= 2:
        t = np.array([s[0] for s in after_first]) / 3600
        r = np.array([s[1] for s in after_first]) / 1e6
        slope = float(np.polyfit(t, r, 1)[0])
    return {
        "calls_answered": sum(m["answered"] for m in per_minute),
        "calls_failed": sum(m["failed"] for m in per_minute),
        "rss_mb_end_of_minute_1": first["rss_mb"],
        "rss_mb_end": last["rss_mb"],
        "rss_growth_mb": round(last["rss_mb"] - first["rss_mb"], 1),
        "rss_slope_mb_per_hour_after_minute_1": round(slope, 1),
        "p50_ms_first_last": [first["p50_ms"], last["p50_ms"]],
        "p99_ms_first_last": [first["p99_ms"], last["p99_ms"]],
        "p99_ms_min_max_over_minutes": [
            min(m["p99_ms"] for m in per_minute),
            max(m["p99_ms"] for m in per_minute),
        ],
        "fds_first_last": [first["fds"], last["fds"]],
        "threads_first_last": [first["threads"], last["threads"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="role")
    client = sub.add_parser("client", help="(internal) one load-generator process")
    client.add_argument("--address", required=True)
    client.add_argument("--requests", required=True)
    client.add_argument("--rate", type=float, required=True)
    client.add_argument("--minutes", type=int, required=True)
    client.add_argument("--out", required=True)
    parser.add_argument("--minutes", type=int, default=10, help="length of the soak")
    parser.add_argument("--rate", type=float, default=300.0, help="claims/s, all clients")
    parser.add_argument("--clients", type=int, default=2, help="load-generator processes")
    parser.add_argument("--practitioners", type=int, default=1_000_000)
    parser.add_argument("--change-every", type=float, default=30.0, help="s; 0 = no changes")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args()
    if args.role == "client":
        asyncio.run(client_main(args))
        return

    directory = Path(tempfile.mkdtemp(prefix="soak-"))
    data = national_data(args.practitioners)
    generator = ClaimGenerator(data, seed=11)
    claims = generator.claims("pharmacy", 4000) + generator.claims("hospital", 1000)
    random.Random(3).shuffle(claims)
    requests_path = directory / "requests.bin"
    write_requests(requests_path, [c.SerializeToString() for c in claims])
    changeable = [codes.decode_practitioner(int(k)) for k in data.arrays["prac_codes"][:2000:7]]
    with RedisProcess() as server:
        publish_national(server.url, "soak", data)
        del data
        gateway = GatewayChild(server.url, "soak")
        clients: list[subprocess.Popen[bytes]] = []
        try:
            gateway.wait_event("index loaded", timeout_s=120)
            pid = gateway.proc.pid
            argv = [
                sys.executable, "-m", "bench.soak", "client",
                "--address", gateway.address, "--requests", str(requests_path),
                "--rate", str(args.rate / args.clients), "--minutes", str(args.minutes),
            ]  # fmt: skip
            outs = [directory / f"client-{k}.jsonl" for k in range(args.clients)]
            clients = [subprocess.Popen([*argv, "--out", str(out)], cwd=ROOT) for out in outs]
            began = time.time()
            samples: list[tuple[float, int]] = []
            minute_marks: dict[int, tuple[int, int, int]] = {}
            next_change = began + args.change_every if args.change_every else float("inf")
            flips = 0
            while any(c.poll() is None for c in clients):
                now = time.time()
                elapsed = now - began
                rss = rss_bytes(pid)
                samples.append((elapsed, rss))
                minute = int(elapsed // 60)
                if 1 <= minute <= args.minutes and minute not in minute_marks:
                    minute_marks[minute] = (rss, fd_count(pid), thread_count(pid))
                    print(f"minute {minute}: RSS {rss / 1e6:.1f} MB", flush=True)
                if now >= next_change and elapsed < args.minutes * 60:
                    code = changeable[flips % len(changeable)]
                    publish_one_change(server.url, "soak", code, flips % 2 == 0, directory)
                    flips += 1
                    next_change += args.change_every
                time.sleep(1.0)
            final = (rss_bytes(pid), fd_count(pid), thread_count(pid))
            if any(c.returncode != 0 for c in clients):
                raise RuntimeError("a load-generator process failed")
            outputs = [out.read_text() for out in outs]
        finally:
            for c in clients:
                if c.poll() is None:
                    c.kill()
                    c.wait()
            gateway.stop()

    per_minute: list[dict[str, Any]] = []
    rows = [[json.loads(line) for line in out.splitlines() if line] for out in outputs]
    for m in range(args.minutes):
        latencies = np.concatenate([np.array(r[m]["latencies_ms"]) for r in rows])
        rss, fds, threads = minute_marks.get(m + 1, final)
        per_minute.append(
            {
                "minute": m + 1,
                "answered": sum(r[m]["answered"] for r in rows),
                "failed": sum(r[m]["failed"] for r in rows),
                "p50_ms": round(float(np.percentile(latencies, 50)), 2),
                "p99_ms": round(float(np.percentile(latencies, 99)), 2),
                "max_ms": round(float(latencies.max()), 1),
                "rss_mb": round(rss / 1e6, 1),
                "fds": fds,
                "threads": threads,
            }
        )
    report = {
        "command": " ".join(["python -m bench.soak", *sys.argv[1:]]),
        "practitioners": args.practitioners,
        "rate_per_s": args.rate,
        "changes_published": flips,
        "per_minute": per_minute,
        "summary": summarise(per_minute, samples),
    }
    print("minute  answered  failed  p50 ms  p99 ms  max ms  RSS MB  fds  threads")
    for row in per_minute:
        print(
            f"{row['minute']:>6}  {row['answered']:>8}  {row['failed']:>6}  {row['p50_ms']:>6}  "
            f"{row['p99_ms']:>6}  {row['max_ms']:>6}  {row['rss_mb']:>6}  {row['fds']:>3}  "
            f"{row['threads']:>7}"
        )
    print(json.dumps(report["summary"], indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
