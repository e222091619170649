"""Side-by-side throughput: the real gateway against an empty-handler server
on the same proto, same load generator, same run (SPEC §8).

    python -m bench.throughput [--practitioners 15000000] [--duration 8] [--rounds 2]
                               [--json out.json] [--plot latency.png] [--cpp | --no-cpp]

Setup: a private redis-server with the national data set (``bench.national``)
published by the loader's publisher; ``python -m gateway`` and
``bench.empty_server`` all pinned to core 0 (``taskset``); the load
generators (``bench.loadgen``, several grpc.aio processes) pinned to core 1.
A third server, ``bench.bare_server``, runs the gateway's servicer alone (no
interceptor, metrics, health or background tasks), to show where the time
goes. A fourth, the compiled reference (``bench/cpp_server``, built by
``make bench-cpp``: a C++ gRPC server on the same proto deciding each line
with one hash lookup over the same data set), runs when its binary exists or
``--cpp`` is given, and gives gateway / C++: the distance to the physical
limit of the machine. Scenarios: unary CheckClaim with 1-line pharmacy claims
(a prescriber on the line, the principal checked) and 20-line hospital
claims, and the CheckClaims stream with 20-line claims. For each scenario and server: the maximum
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
from bench.national import NATIONAL_PRACTITIONERS, ClaimGenerator, NationalData, national_data
from bench.processes import ROOT, GatewayChild, pinned, publish_national
from contract.days import DAY_NONE, day_to_yyyymmdd
from contract.snapshot import DAY_BITS
from gateway.ops.redis_process import RedisProcess, free_port

SERVER_CORE = "0"
CLIENT_CORE = "1"
CPP_SERVER = ROOT / "bench" / "cpp_server" / "build" / "eligibility_cpp_server"


@dataclass(frozen=True)
class Scenario:
    name: str
    mode: str  # unary | stream
    lines: int
    target_ratio: float


SCENARIOS = (
    Scenario("unary 1-line", "unary", 1, 0.95),
    Scenario("unary 20-line", "unary", 20, 0.90),
    Scenario("stream 20-line", "stream", 20, 0.85),
)


@dataclass
class Result:
    scenario: str
    lines: int
    empty_rps: float = 0.0
    bare_rps: float = 0.0  # the servicer alone (bench.bare_server)
    gateway_rps: float = 0.0
    cpp_rps: float = 0.0  # the compiled reference (bench/cpp_server); 0 if not run
    server_cpu: dict[str, float] = field(default_factory=dict)  # cores used at the maximum
    # calls per server CPU-second (best run): the C++ server does not fill its
    # core with these load generators, so its req/s understates what it can do
    per_cpu_s: dict[str, float] = field(default_factory=dict)
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

    @property
    def ratio_cpp(self) -> float:
        return self.gateway_rps / self.cpp_rps if self.cpp_rps else 0.0

    @property
    def ratio_cpp_cpu(self) -> float:
        """gateway / C++ in calls per server CPU-second."""
        cpp = self.per_cpu_s.get("cpp", 0.0)
        return self.per_cpu_s.get("gateway", 0.0) / cpp if cpp else 0.0


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


# bench/cpp_server's index file: a header, the institution keys (row =
# institution id), then one record per practitioner as of the data set's day.
_CPP_HEADER = np.dtype(
    [("magic", "S8"), ("n_inst", "<u8"), ("n_prac", "<u8"), ("today", "<i4"), ("pad", "<i4")]
)
_CPP_RECORD = np.dtype(
    [
        ("key", "<u8"), ("until", "<i4"), ("status", "u1"), ("n_open", "u1"), ("pad", "<u2"),
        ("inst", "<u4", (3,)), ("pad2", "<u4"),
    ]
)  # fmt: skip


def write_cpp_index(data: NationalData, path: Path) -> None:
    """Write what bench/cpp_server decides from: every practitioner's status,
    suspension end and open registrations on ``data.today`` (what the
    gateway's index answers for that day), from the same snapshot arrays."""
    a, today = data.arrays, data.today
    n = data.n_practitioners
    rec = np.zeros(n, dtype=_CPP_RECORD)
    rec["key"] = a["prac_codes"]
    # Status on the day: each row's last change at or before it (ACTIVE if none).
    st_key = a["st_key"].astype(np.uint64)
    upto = (st_key & np.uint64((1 << DAY_BITS) - 1)) <= np.uint64(today)
    rows = (st_key[upto] >> np.uint64(DAY_BITS)).astype(np.int64)
    last = np.append(rows[1:] != rows[:-1], True) if len(rows) else rows.astype(bool)
    status = np.full(n, 1, dtype=np.uint8)  # STATUS_ACTIVE
    status[rows[last]] = a["st_status"][upto][last]
    until_day = np.full(n, DAY_NONE, dtype=np.int64)
    until_day[rows[last]] = a["st_until"][upto][last]
    rec["status"] = status
    for day in np.unique(until_day[until_day != DAY_NONE]):
        rec["until"][until_day == day] = day_to_yyyymmdd(int(day))
    # Registrations open on the day: up to three per practitioner.
    offsets = a["reg_offsets"].astype(np.int64)
    owner = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
    reg_until = a["reg_until"].astype(np.int64)
    open_ = (a["reg_from"] <= today) & ((reg_until == DAY_NONE) | (today < reg_until))
    rank = np.cumsum(open_) - 1
    rank -= np.concatenate([[0], np.cumsum(open_)])[offsets[:-1]][owner]
    keep = open_ & (rank < 3)
    inst = np.full((n, 3), 0xFFFFFFFF, dtype=np.uint32)
    inst[owner[keep], rank[keep]] = a["reg_inst"][keep]
    rec["inst"] = inst
    rec["n_open"] = np.minimum(np.bincount(owner[open_], minlength=n), 3)
    header = np.zeros(1, dtype=_CPP_HEADER)
    header[0] = (b"ELIGCPP1", len(a["inst_codes"]), n, day_to_yyyymmdd(today), 0)
    with path.open("wb") as out:
        out.write(header.tobytes())
        out.write(a["inst_codes"].astype("<u8").tobytes())
        out.write(rec.tobytes())


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
    parser.add_argument(
        "--cpp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the compiled reference (bench/cpp_server, `make bench-cpp`) too; "
        "default: when its binary exists",
    )
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("needs two cores: one for the server, one for the load generators")
    if args.cpp is None:
        args.cpp = CPP_SERVER.exists()
    elif args.cpp and not CPP_SERVER.exists():
        sys.exit(f"--cpp: no {CPP_SERVER.relative_to(ROOT)}; build it with `make bench-cpp`")

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
        cpp_index = workdir / "cpp-index.bin"
        if args.cpp:
            write_cpp_index(data, cpp_index)
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
        children = [empty, bare]
        if args.cpp:
            cpp_port = free_port()
            cpp = subprocess.Popen(
                pinned(SERVER_CORE, [str(CPP_SERVER), "--index", str(cpp_index), "--port",
                                     str(cpp_port)]),
                cwd=ROOT, stdout=sys.stderr,
            )  # fmt: skip
            children.append(cpp)
            addresses["cpp"] = f"127.0.0.1:{cpp_port}"
            pids["cpp"] = cpp.pid
        try:
            gateway.wait_event("index loaded")
            for address in addresses.values():
                wait_ready(address)
            results = [measure(s, files[s.lines], addresses, pids, args) for s in scenarios]
        finally:
            gateway.stop()
            for proc in children:
                proc.terminate()
                proc.wait()
            cpp_index.unlink(missing_ok=True)
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
            if cpu > 0:
                result.per_cpu_s[name] = max(result.per_cpu_s.get(name, 0.0), rps / cpu)
            if name == "empty":
                result.empty_rps = max(result.empty_rps, rps)
            elif name == "bare":
                result.bare_rps = max(result.bare_rps, rps)
            elif name == "cpp":
                result.cpp_rps = max(result.cpp_rps, rps)
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
    if any(r.cpp_rps for r in results):
        print(
            f"{'scenario':15s} {'C++ req/s':>11s} {'gateway/empty':>13s} {'gateway/C++':>11s} "
            f"{'per CPU-s: C++':>14s} {'gateway':>8s} {'gateway/C++':>11s}"
        )
        for r in results:
            per_cpu = r.per_cpu_s
            print(
                f"{r.scenario:15s} {r.cpp_rps:11.0f} {r.ratio:13.2f} {r.ratio_cpp:11.3f} "
                f"{per_cpu.get('cpp', 0.0):14.0f} {per_cpu.get('gateway', 0.0):8.0f} "
                f"{r.ratio_cpp_cpu:11.3f}"
            )
        print(
            "C++ = bench/cpp_server (C++ gRPC callback server, same proto, one hash lookup "
            "per line over the same data set), pinned to the same core; per CPU-s = calls "
            "per second of the server's own CPU (the C++ server is below 1.0 core when the "
            "load generators are the limit: then gateway/C++ in req/s is an upper bound)"
        )
    for r in results:
        cpu = ", ".join(f"{name} {c:.2f}" for name, c in r.server_cpu.items())
        runs = "/".join(f"{p:.2f}" for p in r.p99_runs_ms)
        print(f"{r.scenario}: server CPU at max (cores): {cpu}; p99 of 3 runs: {runs or '-'} ms")
    if args.json:
        doc = [
            asdict(r)
            | {"ratio": r.ratio, "ratio_cpp": r.ratio_cpp, "ratio_cpp_cpu": r.ratio_cpp_cpu}
            for r in results
        ]
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
