"""Streams whose client sends and never reads (``python -m bench.stream_pressure``).

Issue 11: 250 ``CheckClaims`` streams that send claims and never read an
answer grew the gateway from 90 MB to 1,157 MB (~4.2 MB a stream) and a
normal call went from 6 to 356 ms. gRPC's BDP probing grew each stream's
HTTP/2 receive window to megabytes, and the server read that far ahead of a
handler stuck on its unsent answers. The gateway now turns BDP probing off and
reads ahead ``--stream-window-bytes`` (64 KiB) per stream
(``gateway.server.connection_options``).

Loopback only. One private redis-server, the real gateway (``python -m
gateway``), and one flooding client process opening ``--streams`` streams
that each write ``--lines``-line claims as fast as flow control lets them and
never read. Every second the gateway's RSS is sampled; before the flood and
at its end, sequential unary ``CheckClaim`` calls and health checks from this
(otherwise idle) process measure what a normal client sees.

    python -m bench.stream_pressure [--streams 250] [--lines 1000] [--duration 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.ops.redis_process import RedisProcess
from proto.eligibility.v1 import eligibility_pb2 as pb
from proto.eligibility.v1 import eligibility_pb2_grpc as pb_grpc
from tests.gateway_process import GatewayProcess
from tests.ops_data import ACTIVE, hospital_claim, line, publish

ROOT = Path(__file__).resolve().parent.parent


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for row in status:
            if row.startswith("VmRSS:"):
                return int(row.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def unary_ms(address: str, calls: int) -> tuple[float, float]:
    """(p50, max) ms of sequential CheckClaim calls, each also checking health."""
    claim = hospital_claim("probe", line(ACTIVE, "1"))
    took = []
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.EligibilityGatewayStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(calls):
            started = time.perf_counter()
            assert stub.CheckClaim(claim, timeout=10).claim_id == "probe"
            took.append((time.perf_counter() - started) * 1e3)
            serving = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
            assert serving == health_pb2.HealthCheckResponse.SERVING
    return statistics.median(took), max(took)


Stream = grpc.aio.StreamStreamCall[pb.CheckClaimRequest, pb.CheckClaimResponse]


def open_check_claims(channel: grpc.aio.Channel, timeout_s: float | None = None) -> Stream:
    """A ``CheckClaims`` stream on an asyncio channel (typed, unlike the stub's)."""
    method = channel.stream_stream(
        "/eligibility.v1.EligibilityGateway/CheckClaims",
        request_serializer=pb.CheckClaimRequest.SerializeToString,
        response_deserializer=pb.CheckClaimResponse.FromString,
    )
    return method(None, timeout=timeout_s)  # None: requests written with call.write


async def _flood(address: str, streams: int, lines: int) -> None:
    claim = hospital_claim("flood", *[line(ACTIVE, f"{i:08d}") for i in range(lines)])

    async def one(channel: grpc.aio.Channel) -> None:
        call = open_check_claims(channel)
        while True:  # never reads: write() waits only for flow control
            await call.write(claim)

    async with grpc.aio.insecure_channel(address) as channel:
        await asyncio.gather(*(one(channel) for _ in range(streams)), return_exceptions=True)


def start_flood(address: str, streams: int, lines: int) -> subprocess.Popen[bytes]:
    """The flooding client, in its own process (its event loop stays out of
    the latency measured here)."""
    args = ["flood", address, str(streams), str(lines)]
    return subprocess.Popen(
        [sys.executable, "-m", "bench.stream_pressure", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@dataclass
class Pressure:
    streams: int
    lines: int
    seconds: float
    rss_before_mb: float
    rss_peak_mb: float
    rss_end_mb: float
    unary_before_ms: tuple[float, float]
    unary_during_ms: tuple[float, float]

    @property
    def per_stream_mb(self) -> float:
        return (self.rss_peak_mb - self.rss_before_mb) / self.streams


def measure(
    gateway: GatewayProcess, streams: int, lines: int, seconds: float, probe_calls: int = 50
) -> Pressure:
    """Flood a running gateway for ``seconds``; its RSS and unary latency."""
    assert gateway.proc is not None
    pid = gateway.proc.pid
    unary_before = unary_ms(gateway.address, probe_calls)
    before = rss_mb(pid)
    flood = start_flood(gateway.address, streams, lines)
    try:
        peak = before
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.5)
            peak = max(peak, rss_mb(pid))
        unary_during = unary_ms(gateway.address, probe_calls)
        end = rss_mb(pid)
        peak = max(peak, end)
    finally:
        flood.kill()
        flood.wait()
    return Pressure(streams, lines, seconds, before, peak, end, unary_before, unary_during)


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "flood":
        asyncio.run(_flood(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.stream_pressure")
    parser.add_argument("--streams", type=int, default=250)
    parser.add_argument("--lines", type=int, default=1000, help="lines per claim sent")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of flood")
    parser.add_argument(
        "--gateway-arg", action="append", default=[], help="extra gateway flag (repeatable)"
    )
    args = parser.parse_args()
    with RedisProcess() as redis_server:
        publish(redis_server.url, "pressure")
        gateway_args = ["--max-open-streams", str(args.streams + 10), *args.gateway_arg]
        with GatewayProcess(redis_server.url, "pressure", *gateway_args) as gateway:
            p = measure(gateway, args.streams, args.lines, args.duration)
    print(
        f"{p.streams} streams x {p.lines}-line claims, never read, {p.seconds:.0f} s: "
        f"gateway RSS {p.rss_before_mb:.0f} MB -> peak {p.rss_peak_mb:.0f} MB "
        f"(end {p.rss_end_mb:.0f} MB; {p.per_stream_mb:.2f} MB a stream); "
        f"unary CheckClaim p50/max {p.unary_before_ms[0]:.1f}/{p.unary_before_ms[1]:.1f} ms "
        f"before, {p.unary_during_ms[0]:.1f}/{p.unary_during_ms[1]:.1f} ms during"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
