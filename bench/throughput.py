"""Side-by-side throughput: the real gateway against an empty-handler server
on the same proto, same load generator, same run (SPEC §8).

    python -m bench.throughput [--practitioners 15000000] [--duration 8] [--rounds 2]
                               [--json out.json] [--plot latency.png]

Setup: a private redis-server with the national data set (``bench.national``)
published by the loader's publisher; ``python -m gateway`` and
``bench.empty_server`` all pinned to core 0 (``taskset``); the load
generators (``bench.loadgen``, several grpc.aio processes) pinned to core 1.
A third server, ``bench.bare_server``, runs the gateway's servicer alone (no
interceptor, metrics, health or background tasks), to show where the time
goes. Scenarios: unary CheckClaim with 1-line pharmacy claims (a prescriber on the
line, the principal checked) and 20-line hospital claims, and the CheckClaims
stream with 20-line claims. For each scenario and server: the maximum
(closed loop), alternating servers over ``--rounds`` rounds and keeping each
one's best; then the gateway at a constant rate of half its maximum for
p50/p99/p99.9 (open loop). Ratios are within one run: the machine is shared,
absolute numbers move, ratios much less.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
import numpy as np
import orjson

from bench.loadgen import write_requests
from bench.national import NATIONAL_PRACTITIONERS, ClaimGenerator, national_data
from bench.processes import ROOT, GatewayChild, pinned, publish_national
from gateway.ops.redis_process import RedisProcess, free_port

SERVER_CORE = "0"
CLIENT_CORE = "1"


@dataclass(frozen=True)
class Scenario:
    name: str
    mode: str  # unary | stream
    lines: int
    target_ratio: float


SCENARIOS = (
    Scenario("unary 1-line", "unary", 1, 0.90),
    Scenario("unary 20-line", "unary", 20, 0.80),
    Scenario("stream 20-line", "stream", 20, 0.80),
)


@dataclass
class Result:
    scenario: str
    lines: int
    empty_rps: float = 0.0
    bare_rps: float = 0.0  # the servicer alone (bench.bare_server)
    gateway_rps: float = 0.0
    server_cpu: dict[str, float] = field(default_factory=dict)  # cores used at the maximum
    p99_runs_ms: list[float] = field(default_factory=list)
    target_ratio: float = 0.0
    latency_rate: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    p999_ms: float = 0.0
    errors: int = 0
    curve: list[dict[str, float]] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.gateway_rps / self.empty_rps if self.empty_rps else 0.0


def run_load(
    address: str,
    requests: Path,
    *,
    mode: str,
    duration_s: float,
    clients: int,
    rate: float = 0.0,
    concurrency: int = 16,
    server_pid: int | None = None,
) -> tuple[float, list[float], int, float]:
    """Run ``clients`` loadgen processes on the client core.

    Returns (calls/s, latencies, errors, the server's CPU use in cores over
    the whole run): a server near 1.0 is the bottleneck, not the generator.
    """
    argv = [
        sys.executable, "-m", "bench.loadgen", "--address", address,
        "--requests", str(requests), "--mode", mode, "--duration", str(duration_s),
        "--warmup", "1.5", "--concurrency", str(concurrency), "--streams", "2",
    ]  # fmt: skip
    if rate:
        argv += ["--rate", str(rate / clients)]
    cpu_before, wall_before = cpu_seconds(server_pid), time.perf_counter()
    procs = [
        subprocess.Popen(pinned(CLIENT_CORE, argv), cwd=ROOT, stdout=subprocess.PIPE)
        for _ in range(clients)
    ]
    completed, errors, latencies = 0, 0, []
    for proc in procs:
        out, _ = proc.communicate(timeout=duration_s + 120)
        if proc.returncode != 0:
            raise RuntimeError(f"load generator failed ({proc.returncode})")
        doc = orjson.loads(out)
        completed += doc["completed"]
        errors += doc["errors"]
        latencies += doc["latencies"]
    cpu = (cpu_seconds(server_pid) - cpu_before) / (time.perf_counter() - wall_before)
    return completed / duration_s, latencies, errors, cpu


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process and its threads so far (0 without a pid)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentiles_ms(latencies: list[float]) -> tuple[float, float, float]:
    if not latencies:
        return (float("nan"),) * 3
    p = np.percentile(np.array(latencies), [50, 99, 99.9]) * 1000
    return float(p[0]), float(p[1]), float(p[2])


def wait_ready(address: str, timeout_s: float = 60) -> None:
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--practitioners", type=int, default=NATIONAL_PRACTITIONERS)
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per run")
    parser.add_argument("--rounds", type=int, default=2, help="alternations per scenario")
    parser.add_argument("--clients", type=int, default=2, help="load-generator processes")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight per client")
    parser.add_argument("--scenarios", default="all", help="comma-separated prefixes, or all")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--plot", type=Path, help="latency vs offered load PNG (unary 1-line)")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("needs two cores: one for the server, one for the load generators")

    scenarios = [
        s for s in SCENARIOS if args.scenarios == "all" or any(
            s.name.startswith(p.strip()) for p in args.scenarios.split(",")
        )
    ]  # fmt: skip
    workdir = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    with RedisProcess() as server:
        data = national_data(args.practitioners)
        publish_national(server.url, "bench", data)
        gen = ClaimGenerator(data, seed=17)
        files = {}
        for lines in sorted({s.lines for s in scenarios}):
            shape = "pharmacy-rx" if lines < 20 else "hospital"
            files[lines] = workdir / f"requests-{lines}.bin"
            write_requests(
                files[lines], [r.SerializeToString() for r in gen.claims(shape, 2000, lines)]
            )
        del data, gen
        gateway = GatewayChild(server.url, "bench", cores=SERVER_CORE)
        empty_port, bare_port = free_port(), free_port()
        empty = subprocess.Popen(
            pinned(SERVER_CORE, [sys.executable, "-m", "bench.empty_server", "--port",
                                 str(empty_port)]),
            cwd=ROOT, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        bare = subprocess.Popen(
            pinned(SERVER_CORE, [sys.executable, "-m", "bench.bare_server", "--redis-url",
                                 server.url, "--port", str(bare_port)]),
            cwd=ROOT, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        addresses = {
            "empty": f"127.0.0.1:{empty_port}",
            "bare": f"127.0.0.1:{bare_port}",
            "gateway": gateway.address,
        }
        pids = {"empty": empty.pid, "bare": bare.pid, "gateway": gateway.proc.pid}
        try:
            gateway.wait_event("index loaded")
            for address in addresses.values():
                wait_ready(address)
            results = [measure(s, files[s.lines], addresses, pids, args) for s in scenarios]
        finally:
            gateway.stop()
            for proc in (empty, bare):
                proc.terminate()
                proc.wait()
    report(results, args)


def measure(
    s: Scenario,
    requests: Path,
    addresses: dict[str, str],
    pids: dict[str, int],
    args: argparse.Namespace,
) -> Result:
    result = Result(s.name, s.lines, target_ratio=s.target_ratio)
    gateway = addresses["gateway"]
    for _ in range(args.rounds):
        for name, address in addresses.items():
            rps, _, errors, cpu = run_load(
                address, requests, mode=s.mode, duration_s=args.duration,
                clients=args.clients, concurrency=args.concurrency, server_pid=pids[name],
            )  # fmt: skip
            result.server_cpu[name] = max(result.server_cpu.get(name, 0.0), cpu)
            if name == "empty":
                result.empty_rps = max(result.empty_rps, rps)
            elif name == "bare":
                result.bare_rps = max(result.bare_rps, rps)
            else:
                result.gateway_rps = max(result.gateway_rps, rps)
                result.errors += errors
            print(
                f"  {s.name:15s} {name:8s} {rps:8.0f} req/s  server CPU {cpu:.2f} cores",
                file=sys.stderr,
                flush=True,
            )
    result.latency_rate = result.gateway_rps / 2
    if s.mode == "unary":
        # Three runs at half the maximum; the median run by p99 is reported (the
        # machine is shared: one run can catch someone else's burst).
        runs = []
        for _ in range(3):
            _, latencies, errors, _ = run_load(
                gateway, requests, mode="unary", duration_s=args.duration,
                clients=args.clients, rate=result.latency_rate,
            )  # fmt: skip
            result.errors += errors
            runs.append(percentiles_ms(latencies))
        runs.sort(key=lambda p: p[1])
        result.p50_ms, result.p99_ms, result.p999_ms = runs[1]
        result.p99_runs_ms = [p[1] for p in runs]
        if args.plot and s.lines == 1:
            for fraction in (0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0):
                rate = result.gateway_rps * fraction
                got, latencies, _, _ = run_load(
                    gateway, requests, mode="unary", duration_s=args.duration / 2,
                    clients=args.clients, rate=rate,
                )  # fmt: skip
                p50, p99, p999 = percentiles_ms(latencies)
                result.curve.append(
                    {"offered": rate, "achieved": got, "p50": p50, "p99": p99, "p999": p999}
                )
    return result


def report(results: list[Result], args: argparse.Namespace) -> None:
    print(
        f"{'scenario':15s} {'empty req/s':>11s} {'servicer':>9s} {'gateway req/s':>13s} "
        f"{'lines/s':>9s} {'ratio':>6s} {'target':>6s}  "
        "latency at half max: rate p50/p99/p99.9 ms"
    )
    for r in results:
        latency = (
            f"{r.latency_rate:6.0f}/s {r.p50_ms:.2f}/{r.p99_ms:.2f}/{r.p999_ms:.2f}"
            if r.p50_ms
            else "-"
        )
        print(
            f"{r.scenario:15s} {r.empty_rps:11.0f} {r.bare_rps:9.0f} {r.gateway_rps:13.0f} "
            f"{r.gateway_rps * r.lines:9.0f} {r.ratio:6.2f} {r.target_ratio:6.2f}  {latency}"
        )
    print(
        "servicer = the gateway's servicer alone on a grpc.aio server (bench.bare_server: "
        "no interceptor, metrics, health or background tasks); ratio = gateway / empty"
    )
    for r in results:
        cpu = ", ".join(f"{name} {c:.2f}" for name, c in r.server_cpu.items())
        runs = "/".join(f"{p:.2f}" for p in r.p99_runs_ms)
        print(f"{r.scenario}: server CPU at max (cores): {cpu}; p99 of 3 runs: {runs or '-'} ms")
    if args.json:
        doc = [asdict(r) | {"ratio": r.ratio} for r in results]
        args.json.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    if args.plot:
        plot_latency(results, args.plot)


def plot_latency(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = next((r.curve for r in results if r.curve), [])
    if not curve:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    offered = [c["offered"] for c in curve]
    for key, label in (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")):
        ax.plot(offered, [c[key] for c in curve], marker="o", label=label)
    ax.axhline(5.0, color="grey", linestyle="--", linewidth=1, label="p99 target 5 ms")
    ax.set_yscale("log")
    ax.set_xlabel("offered load (1-line CheckClaim calls/s, constant rate)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"gateway latency vs offered load, server on 1 core ({time.strftime('%Y-%m-%d')})")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
