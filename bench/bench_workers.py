"""``--workers N`` at national scale: memory with 1 and 2 workers, and
throughput per CPU-second (a 2-core machine cannot host 2 busy workers and a
load generator, so linearity is judged per core-second of server CPU).

    python -m bench.bench_workers [--practitioners 15000000] [--duration 6]

For each N: the real gateway (``python -m gateway --workers N``) on the
national data set in a private redis-server; once every worker has logged
``index loaded``, each worker's RSS and PSS (proportional set size: a page
shared by two processes counts half in each, so the PSS sum is the real
memory) from ``/proc/PID/smaps_rollup``; then 1-line claims from the load
generator (``bench.loadgen``, two processes, unpinned) for ``--duration``
seconds, with the workers' CPU time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.loadgen import write_requests
from bench.national import NATIONAL_PRACTITIONERS, ClaimGenerator, national_data
from bench.processes import GatewayChild, publish_national, rss_bytes
from bench.throughput import cpu_seconds, run_load, wait_ready
from gateway.ops.redis_process import RedisProcess


def pss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no Pss for pid {pid}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--practitioners", type=int, default=NATIONAL_PRACTITIONERS)
    parser.add_argument("--duration", type=float, default=6.0)
    args = parser.parse_args()
    requests = Path(tempfile.mkdtemp(prefix="bench-workers-")) / "requests-1.bin"
    with RedisProcess() as server:
        data = national_data(args.practitioners)
        publish_national(server.url, "bench", data)
        claims = ClaimGenerator(data, seed=29).claims("pharmacy-rx", 2000, 1)
        write_requests(requests, [c.SerializeToString() for c in claims])
        n, index_bytes = data.n_practitioners, data.nbytes
        del data, claims
        rows = []
        for workers in (1, 2):
            gateway = GatewayChild(server.url, "bench", extra=("--workers", str(workers)))
            try:
                if workers > 1:
                    pids = list(gateway.wait_event("workers started")["pids"])
                else:
                    pids = [gateway.proc.pid]
                deadline = time.monotonic() + 120
                while sum(e.get("msg") == "index loaded" for e in gateway.events()) < workers:
                    if time.monotonic() > deadline:
                        raise TimeoutError("workers did not all load the index")
                    time.sleep(0.1)
                wait_ready(gateway.address)
                time.sleep(1.0)
                rss = sum(rss_bytes(p) for p in pids)
                pss = sum(pss_bytes(p) for p in pids)
                cpu_before = sum(cpu_seconds(p) for p in pids)
                rps, _, errors, _ = run_load(
                    gateway.address, requests, mode="unary", duration_s=args.duration,
                    clients=2, concurrency=16,
                )  # fmt: skip
                cpu = sum(cpu_seconds(p) for p in pids) - cpu_before
                rows.append((workers, rss, pss, rps, cpu, errors))
            finally:
                gateway.stop()
    print(f"practitioners: {n:,}; snapshot arrays {index_bytes / 1e6:.0f} MB")
    print("workers  RSS sum (MB)  PSS sum (MB)  req/s (1-line)  server CPU-s  req per CPU-s")
    for workers, rss, pss, rps, cpu, errors in rows:
        per_cpu = rps * args.duration / cpu if cpu else 0.0
        print(
            f"{workers:7d}  {rss / 1e6:12.0f}  {pss / 1e6:12.0f}  {rps:14.0f}  {cpu:12.1f}"
            f"  {per_cpu:13.0f}" + (f"  ({errors} errors)" if errors else "")
        )


if __name__ == "__main__":
    main()
