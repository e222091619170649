"""One load-generator process for the throughput harness (``bench.throughput``).

Sends pre-serialised ``CheckClaimRequest`` bytes over grpc.aio with identity
serialisers (no protobuf work on the client side), either closed-loop (as
fast as the server answers, ``--concurrency`` calls in flight) or open-loop
at a constant ``--rate``: calls are fired on schedule whether or not earlier
ones have been answered, so a slow server's queue shows in the latencies (no
coordinated omission); each latency runs from the moment the call is sent,
so the client's own timer lateness is not counted against the server.
``--mode stream`` keeps ``--concurrency`` messages in flight on each of
``--streams`` CheckClaims streams. Prints one JSON object: completed calls
and latencies (seconds) inside the measurement window.

    python -m bench.loadgen --address 127.0.0.1:50051 --requests reqs.bin \
        --mode unary --duration 10 --warmup 2 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import struct
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import orjson

UNARY = "/eligibility.v1.EligibilityGateway/CheckClaim"
STREAM = "/eligibility.v1.EligibilityGateway/CheckClaims"
MAX_LATENCIES = 200_000


def write_requests(path: Path, requests: list[bytes]) -> None:
    """Length-prefixed request bytes, as ``read_requests`` reads them."""
    with path.open("wb") as out:
        for raw in requests:
            out.write(struct.pack("<I", len(raw)))
            out.write(raw)


def read_requests(path: Path) -> list[bytes]:
    data = path.read_bytes()
    out, pos = [], 0
    while pos < len(data):
        (n,) = struct.unpack_from("<I", data, pos)
        out.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


class Recorder:
    def __init__(self, start: float, end: float) -> None:
        self.start, self.end = start, end
        self.completed = 0
        self.errors = 0
        self.latencies: list[float] = []

    def done(self, due: float, now: float, sent: float | None = None) -> None:
        """Count a call due at ``due`` (inside the window) answered at ``now``."""
        if self.start <= due and now <= self.end:
            self.completed += 1
            if len(self.latencies) < MAX_LATENCIES:
                self.latencies.append(now - (due if sent is None else sent))


async def closed_loop(
    calls: list[grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]],
    requests: list[bytes],
    rec: Recorder,
    concurrency: int,
) -> None:
    async def worker(k: int) -> None:
        call = calls[k % len(calls)]
        i = k
        while time.perf_counter() < rec.end:
            due = time.perf_counter()
            try:
                await call(requests[i % len(requests)])
            except grpc.RpcError:
                rec.errors += 1
            rec.done(due, time.perf_counter())
            i += concurrency

    await asyncio.gather(*(worker(k) for k in range(concurrency)))


async def open_loop(
    calls: list[grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]],
    requests: list[bytes],
    rec: Recorder,
    rate: float,
    max_in_flight: int,
) -> None:
    in_flight: set[asyncio.Task[None]] = set()
    began = time.perf_counter()

    async def one(i: int, due: float) -> None:
        sent = time.perf_counter()
        try:
            await calls[i % len(calls)](requests[i % len(requests)])
        except grpc.RpcError:
            rec.errors += 1
        rec.done(due, time.perf_counter(), sent)

    i = 0
    while True:
        due = began + i / rate
        if due > rec.end:
            break
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(in_flight) >= max_in_flight:
            rec.errors += 1  # dropped: the server is far behind the offered rate
        else:
            task = asyncio.create_task(one(i, due))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        i += 1
    if in_flight:
        await asyncio.wait(in_flight)


async def streaming(
    channels: list[grpc.aio.Channel],
    requests: list[bytes],
    rec: Recorder,
    streams: int,
    window: int,
) -> None:
    async def one_stream(k: int) -> None:
        method = channels[k % len(channels)].stream_stream(STREAM, None, None)
        call: Any = method()  # type: ignore[call-arg]  # no iterator: written with write()
        sent: collections.deque[float] = collections.deque()
        room = asyncio.Semaphore(window)

        async def writer() -> None:
            i = k
            while time.perf_counter() < rec.end:
                await room.acquire()
                sent.append(time.perf_counter())
                await call.write(requests[i % len(requests)])
                i += streams
            await call.done_writing()

        async def reader() -> None:
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:  # type: ignore[attr-defined]
                    return
                rec.done(sent.popleft(), time.perf_counter())
                room.release()

        await asyncio.gather(writer(), reader())

    await asyncio.gather(*(one_stream(k) for k in range(streams)))


async def run(args: argparse.Namespace) -> dict[str, object]:
    requests = read_requests(Path(args.requests))
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.insecure_channel(args.address, options=options) for _ in range(args.channels)
    ]
    for channel in channels:
        await asyncio.wait_for(channel.channel_ready(), 30)
    calls = [c.unary_unary(UNARY, None, None) for c in channels]
    began = time.perf_counter()
    rec = Recorder(began + args.warmup, began + args.warmup + args.duration)
    if args.mode == "stream":
        await streaming(channels, requests, rec, args.streams, args.concurrency)
    elif args.rate:
        await open_loop(calls, requests, rec, args.rate, args.max_in_flight)
    else:
        await closed_loop(calls, requests, rec, args.concurrency)
    for channel in channels:
        await channel.close(None)
    return {
        "completed": rec.completed,
        "errors": rec.errors,
        "seconds": args.duration,
        "latencies": rec.latencies,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="one load-generator process")
    parser.add_argument("--address", required=True)
    parser.add_argument("--requests", required=True, help="file written by write_requests")
    parser.add_argument("--mode", choices=("unary", "stream"), default="unary")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--concurrency", type=int, default=32, help="in flight (per stream)")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--channels", type=int, default=2, help="HTTP/2 connections")
    parser.add_argument("--rate", type=float, default=0.0, help="calls/s; 0 = closed loop")
    parser.add_argument("--max-in-flight", type=int, default=5000)
    args = parser.parse_args()
    sys.stdout.buffer.write(orjson.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
