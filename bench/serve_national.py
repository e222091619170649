"""A gateway serving the national data set, for load tests by hand (locust,
grpcurl, h2load): a private redis-server, ``bench.national`` published by the
loader's publisher, and ``python -m gateway`` on top, until Ctrl-C.

    python -m bench.serve_national --port 50051 [--practitioners 15000000] [--cores 0]

``bench/locustfile.py`` draws its claims from the same data set (same size
from ``BENCH_PRACTITIONERS``, same seed), so its codes are the served ones.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from types import FrameType

from bench.national import NATIONAL_PRACTITIONERS, national_data
from bench.processes import ROOT, pinned, publish_national
from gateway.ops.redis_process import RedisProcess


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_n = int(os.environ.get("BENCH_PRACTITIONERS", NATIONAL_PRACTITIONERS))
    parser.add_argument("--practitioners", type=int, default=default_n)
    parser.add_argument("--port", type=int, default=50051)
    parser.add_argument("--cores", help="taskset core list for the gateway, e.g. 0")
    args, gateway_args = parser.parse_known_args()
    with RedisProcess() as server:
        version = publish_national(server.url, "bench", national_data(args.practitioners))
        print(f"published {args.practitioners:,} practitioners as version {version}", flush=True)
        argv = [
            sys.executable, "-m", "gateway", "--redis-url", server.url, "--prefix", "bench",
            "--host", "127.0.0.1", "--port", str(args.port), "--allow-unsigned", *gateway_args,
        ]  # fmt: skip
        gateway = subprocess.Popen(pinned(args.cores, argv), cwd=ROOT)

        def stop(signum: int, frame: FrameType | None) -> None:
            gateway.send_signal(signal.SIGTERM)  # it shuts down gracefully, then we clean up

        # Also when started in the background, where SIGINT is ignored.
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        gateway.wait()


if __name__ == "__main__":
    main()
