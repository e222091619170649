"""Publish-to-enforced delay of live changes (SPEC §8: p99 <= 100 ms).

    python -m bench.bench_propagation [--practitioners 15000000] [--changes 300]
        [--rate 20] [--load-rate 200]

Steps, all on loopback: a private redis-server (never 6379); the national
data set (``bench.national``) published as the base snapshot; the real
gateway (``python -m gateway``) loads it; a separate load process keeps it
serving 20-line hospital claims at ``--load-rate`` claims/s; then
``--changes`` changes are published one at a time at ``--rate`` per second
with the loader's own publisher (``loader.changes.publish_change``), each
suspending one more ACTIVE hospital doctor (so the overlay grows to
``--changes`` practitioners). For each, the delay runs from just before the
publish call to the first ``CheckClaim`` response, polled back to back over
gRPC, that rejects that doctor's line as SUSPENDED: Lua publish, XREAD
wake-up, overlay merge and swap, and one RPC, end to end. Bounded in time:
about ``changes / rate`` seconds plus the load of the base snapshot.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from multiprocessing.synchronize import Event

import grpc
import numpy as np
import redis

from bench.national import NationalData, national_data
from bench.processes import GatewayChild, publish_national
from contract import codes
from contract.days import DAY_NONE, day_to_yyyymmdd
from contract.domain import Status
from contract.snapshot import DAY_BITS, Arrays, Keys
from gateway.ops.redis_process import RedisProcess
from loader.changes import publish_change
from proto.eligibility.v1 import eligibility_pb2 as pb
from proto.eligibility.v1 import eligibility_pb2_grpc as pb_grpc

PREFIX = "bench-propagation"


def active_hospital_doctors(data: NationalData, count: int, seed: int) -> list[int]:
    """Rows of ACTIVE practitioners with one open registration, at a hospital."""
    a = data.arrays
    counts = np.diff(a["reg_offsets"].astype(np.int64))
    start = a["reg_offsets"][:-1].astype(np.int64)
    single_open = (counts == 1) & (
        a["reg_until"][np.minimum(start, len(a["reg_until"]) - 1)] == DAY_NONE
    )
    at_hospital = a["reg_inst"][np.minimum(start, len(a["reg_inst"]) - 1)] < data.first_pharmacy
    sanctioned = np.zeros(len(counts), dtype=np.bool_)
    sanctioned[(a["st_key"] >> np.uint64(DAY_BITS)).astype(np.int64)] = True
    rows = np.flatnonzero(single_open & at_hospital & ~sanctioned)
    rng = np.random.default_rng(seed)
    chosen: list[int] = rng.choice(rows, size=min(count, len(rows)), replace=False).tolist()
    return chosen


def suspension_change(data: NationalData, row: int) -> Arrays:
    """Row ``row``'s complete new record: its registration, suspended from yesterday for 30 days."""
    a = data.arrays
    reg = int(a["reg_offsets"][row])
    return {
        "prac_codes": a["prac_codes"][row : row + 1].astype("<u8"),
        "reg_offsets": np.array([0, 1], dtype="<u4"),
        "reg_inst": np.array([0], dtype="<u4"),
        "reg_from": a["reg_from"][reg : reg + 1].astype("<u2"),
        "reg_until": a["reg_until"][reg : reg + 1].astype("<u2"),
        "inst_codes": a["inst_codes"][a["reg_inst"][reg : reg + 1]].astype("<u8"),
        "st_key": np.array([data.today - 1, data.today + 30], dtype="<u8"),
        "st_status": np.array([Status.SUSPENDED, Status.ACTIVE], dtype="u1"),
        "st_until": np.array([data.today + 29, DAY_NONE], dtype="<u2"),
        "pt_key": np.zeros(0, dtype="<u8"),
        "pt_points": np.zeros(0, dtype="<u2"),
    }


def claim(data: NationalData, row: int, claim_id: str) -> pb.CheckClaimRequest:
    a = data.arrays
    reg = int(a["reg_offsets"][row])
    return pb.CheckClaimRequest(
        claim_id=claim_id,
        institution_code=codes.decode_institution(int(a["inst_codes"][a["reg_inst"][reg]])),
        channel=pb.CHANNEL_HOSPITAL,
        service_date=day_to_yyyymmdd(data.today),
        lines=[
            pb.ClaimLine(
                line_id="1", prescriber_code=codes.decode_practitioner(int(a["prac_codes"][row]))
            )
        ],
    )


def serve_load(address: str, requests: list[bytes], rate: float, stop: Event) -> None:
    """A separate process: pre-serialised claims at a constant rate until ``stop``."""
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(
            "/eligibility.v1.EligibilityGateway/CheckClaim",
            request_serializer=None,
            response_deserializer=None,
        )
        due = time.perf_counter()
        i = 0
        while not stop.is_set():
            call(requests[i % len(requests)], timeout=5)
            i += 1
            due += 1.0 / rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)


def load_claims(data: NationalData, rows: list[int], n: int) -> list[bytes]:
    """20-line hospital claims of ACTIVE doctors that the changes never touch."""
    out = []
    for i in range(n):
        request = claim(data, rows[i], f"LOAD-{i}")
        lines = [
            pb.ClaimLine(line_id=str(k), prescriber_code=request.lines[0].prescriber_code)
            for k in range(20)
        ]
        del request.lines[:]
        request.lines.extend(lines)
        out.append(request.SerializeToString())
    return out


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--practitioners", type=int, default=15_000_000)
    parser.add_argument("--changes", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0, help="changes per second")
    parser.add_argument("--load-rate", type=float, default=200.0, help="20-line claims per second")
    args = parser.parse_args()

    data = national_data(args.practitioners)
    rows = active_hospital_doctors(data, args.changes + 200, seed=7)
    changed, untouched = rows[: args.changes], rows[args.changes :]
    delays_ms: list[float] = []
    with RedisProcess() as server:
        version = publish_national(server.url, PREFIX, data)
        gateway = GatewayChild(server.url, PREFIX)
        stop = multiprocessing.Event()
        load = multiprocessing.Process(
            target=serve_load,
            args=(gateway.address, load_claims(data, untouched, 200), args.load_rate, stop),
            daemon=True,
        )
        client = redis.Redis.from_url(server.url)
        try:
            loaded = gateway.wait_event("index loaded", timeout_s=300)
            load.start()
            time.sleep(1.0)
            keys = Keys(PREFIX)
            with grpc.insecure_channel(gateway.address) as channel:
                stub = pb_grpc.EligibilityGatewayStub(channel)
                started = time.perf_counter()
                for n, row in enumerate(changed):
                    due = started + n / args.rate
                    time.sleep(max(due - time.perf_counter(), 0.0))
                    request = claim(data, row, f"PROBE-{n}")
                    change = suspension_change(data, row)
                    t0 = time.perf_counter()
                    publish_change(client, keys, change)
                    while True:
                        response = stub.CheckClaim(request, timeout=5)
                        if response.lines[0].reason == pb.REASON_SUSPENDED:
                            break
                        if time.perf_counter() - t0 > 10:
                            raise TimeoutError(f"change {n + 1} not enforced in 10 s")
                    delays_ms.append((time.perf_counter() - t0) * 1000)
                final_version = response.index_version
        finally:
            stop.set()
            if load.is_alive():
                load.join(10)
            client.close()
            gateway.stop()
    print(
        f"machine: {os.cpu_count()} CPUs; base snapshot v{version}: "
        f"{data.n_practitioners:,} practitioners (gateway load {loaded['load_s']:.2f} s)"
    )
    print(
        f"changes: {len(delays_ms)} at {args.rate:g}/s, each suspending one more doctor "
        f"(overlay ends at {len(delays_ms)} practitioners; last index_version {final_version})"
    )
    print(f"background load: 20-line claims at {args.load_rate:g}/s")
    print(
        f"publish-to-enforced delay: p50 {percentile(delays_ms, 50):.2f} ms, "
        f"p99 {percentile(delays_ms, 99):.2f} ms, max {max(delays_ms):.2f} ms"
        "  (target p99 <= 100 ms)"
    )


if __name__ == "__main__":
    main()
