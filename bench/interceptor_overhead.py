"""What the interceptor and the metrics cost per RPC: unary CheckClaim calls/s
against the same in-process server with and without them (a sequential
client in a child process, so client and server do not share a GIL).

    python -m bench.interceptor_overhead [--calls 3000] [--repeat 4]

Runs alternate between the two servers; the best of each is printed. On a
busy 2-core machine the spread between runs (several %) is larger than the
difference measured. Not run by the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys

import redis.asyncio as aioredis

from gateway.index import IndexHolder
from gateway.ops.audit import OverrideAudit
from gateway.ops.metrics import GatewayMetrics
from gateway.server import build_server
from gateway.settings import Settings
from tests.factory import build_index
from tests.gateway_process import ROOT
from tests.ops_data import PEOPLE

CLIENT = """
import sys, time, grpc
from proto.eligibility.v1 import eligibility_pb2_grpc as pb_grpc
from tests.ops_data import ACTIVE, hospital_claim, line
port, calls, lines = (int(a) for a in sys.argv[1:4])
request = hospital_claim("B", *[line(ACTIVE, str(i), 10) for i in range(lines)])
with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
    stub = pb_grpc.EligibilityGatewayStub(channel)
    for _ in range(300):
        stub.CheckClaim(request)
    started = time.perf_counter()
    for _ in range(calls):
        stub.CheckClaim(request)
    print(calls / (time.perf_counter() - started))
"""


async def calls_per_second(with_metrics: bool, lines: int, calls: int) -> float:
    holder = IndexHolder()
    holder.swap(build_index(PEOPLE))
    # The audit is never flushed here (no overrides): its client never connects.
    audit = OverrideAudit(aioredis.Redis.from_url("redis://127.0.0.1:1/0"), "bench:overrides")
    metrics = GatewayMetrics(holder, audit=audit) if with_metrics else None
    server, _, port = build_server(Settings(host="127.0.0.1", port=0), holder, audit, metrics)
    await server.start()
    try:
        client = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CLIENT, str(port), str(calls), str(lines),
            cwd=ROOT, stdout=subprocess.PIPE,
        )  # fmt: skip
        out, _ = await client.communicate()
        return float(out)
    finally:
        await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=4)
    args = parser.parse_args()
    for lines in (1, 20):
        best = {False: 0.0, True: 0.0}
        for _ in range(args.repeat):
            for with_metrics in (False, True):
                rate = asyncio.run(calls_per_second(with_metrics, lines, args.calls))
                best[with_metrics] = max(best[with_metrics], rate)
        change = (best[True] / best[False] - 1) * 100
        print(
            f"{lines:2}-line CheckClaim, best of {args.repeat}: without {best[False]:6.0f}/s, "
            f"with interceptor + metrics {best[True]:6.0f}/s ({change:+.1f}%)"
        )


if __name__ == "__main__":
    main()
