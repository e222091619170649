"""Index load time and memory at national scale, from Redis into a gateway.

    python -m bench.bench_index_load [--practitioners 15000000]

Steps: a private redis-server (never 6379); the real gateway started on an
empty prefix (it waits NOT_SERVING) and its RSS noted; the national data set
(``bench.national``) published with the loader's publisher; then the
gateway's own ``index loaded`` log line read back (``load_s``: Redis read,
validation, index build) and its RSS measured again. Targets (SPEC §8):
load <= 3 s, <= 32 bytes of memory per practitioner.
"""

from __future__ import annotations

import argparse
import gc
import time

from bench.national import NATIONAL_PRACTITIONERS, national_data
from bench.processes import GatewayChild, publish_national, rss_bytes
from gateway.ops.redis_process import RedisProcess


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--practitioners", type=int, default=NATIONAL_PRACTITIONERS)
    args = parser.parse_args()
    with RedisProcess() as server:
        gateway = GatewayChild(server.url, "bench")
        try:
            gateway.wait_event("gateway listening", timeout_s=60)
            time.sleep(0.5)
            rss_before = rss_bytes(gateway.proc.pid)
            data = national_data(args.practitioners)
            n, array_bytes = data.n_practitioners, data.nbytes
            started = time.perf_counter()
            version = publish_national(server.url, "bench", data)
            published_s = time.perf_counter() - started
            del data
            gc.collect()
            loaded = gateway.wait_event("index loaded")
            time.sleep(1.0)  # let the follower drop its temporaries
            rss_after = rss_bytes(gateway.proc.pid)
        finally:
            gateway.stop()
    grown = rss_after - rss_before
    print(f"practitioners: {n:,} (snapshot version {version})")
    print(f"snapshot arrays: {array_bytes / n:.1f} bytes/practitioner ({array_bytes / 1e6:.0f} MB)")
    print(f"loader publish: {published_s:.2f} s")
    print(
        f"gateway load (Redis read + validate + index): {loaded['load_s']:.2f} s  (target <= 3 s)"
    )
    print(f"gateway index_bytes: {int(loaded['index_bytes']) / n:.1f} bytes/practitioner")
    print(
        f"gateway RSS growth: {grown / 1e6:.0f} MB = {grown / n:.1f} bytes/practitioner"
        "  (target <= 32)"
    )


if __name__ == "__main__":
    main()
