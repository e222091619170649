"""Draw the dashboard's key panels from a real run, with matplotlib.

No Grafana server can be installed here, so this stands in for a screenshot
of ``ops/grafana/eligibility-gateway.json``: it starts a private
redis-server, publishes the sample data set, starts the real gateway
(``python -m gateway --metrics-port``), sends it a mix of hospital claims
and pharmacy baskets over gRPC for ``--seconds``, republishes the data half
way, scrapes ``/metrics`` every ``--scrape-s`` seconds, and plots the same
PromQL-style quantities the dashboard shows (rates and histogram quantiles
computed from the scraped counters).

    python -m bench.dashboard_png --out ops/grafana/panels.png [--seconds 60] [--rate 200]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import grpc.aio
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from gateway.ops.redis_process import RedisProcess, free_port
from loader.sample import FIXED
from proto.eligibility.v1 import eligibility_pb2 as pb
from proto.eligibility.v1 import eligibility_pb2_grpc as pb_grpc
from tests.gateway_process import GatewayProcess
from tests.ops_data import DATE, Samples, scrape

SERVICE = "eligibility.v1.EligibilityGateway"
HOSPITAL_STAFF = [
    FIXED.active_doctor,
    FIXED.active_doctor,
    FIXED.active_doctor,
    FIXED.warned_doctor,
    FIXED.technician,
    FIXED.suspended_doctor,
    FIXED.terminated_doctor,
    FIXED.deregistered_doctor,
    FIXED.second_hospital_doctor,
    "D1101-BAD",
]


def publish(redis_url: str, prefix: str, out: Path) -> int:
    import redis

    from contract.snapshot import Keys
    from loader.pipeline import build_snapshot, read_inputs
    from loader.publish import publish_snapshot
    from loader.sample import write_sample

    files = write_sample(out, 500)
    arrays, meta = build_snapshot(read_inputs(files.registry, files.status))
    client = redis.Redis.from_url(redis_url)
    try:
        return publish_snapshot(client, Keys(prefix), arrays, meta).version
    finally:
        client.close()


def hospital_claim(n: int, rng: random.Random) -> pb.CheckClaimRequest:
    lines = [
        pb.ClaimLine(
            line_id=str(i),
            prescriber_code=rng.choice(HOSPITAL_STAFF),
            emergency=rng.random() < 0.08,
            amount_fen=rng.randrange(500, 50_000),
        )
        for i in range(rng.randrange(5, 40))
    ]
    return pb.CheckClaimRequest(
        claim_id=f"HIS-{n}",
        institution_code=FIXED.hospital,
        channel=pb.CHANNEL_HOSPITAL,
        service_date=DATE,
        lines=lines,
    )


def pharmacy_claim(n: int, rng: random.Random) -> pb.CheckClaimRequest:
    suspended = rng.random() < 0.05
    return pb.CheckClaimRequest(
        claim_id=f"POS-{n}",
        institution_code=FIXED.pharmacy_with_suspended_principal if suspended else FIXED.pharmacy,
        channel=pb.CHANNEL_PHARMACY,
        principal_code=FIXED.suspended_principal if suspended else FIXED.active_principal,
        service_date=DATE,
        lines=[
            pb.ClaimLine(line_id=str(i), prescriber_code="", amount_fen=rng.randrange(100, 9000))
            for i in range(rng.randrange(1, 6))
        ],
    )


async def drive(address: str, seconds: float, rate: float) -> int:
    """Send claims at about ``rate`` per second (varying) for ``seconds``."""
    rng = random.Random(7)
    sent = 0
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.EligibilityGatewayStub(channel)
        loop = asyncio.get_running_loop()
        start = loop.time()
        pending: set[asyncio.Future[object]] = set()
        while (now := loop.time() - start) < seconds:
            # A morning ramp: the rate rises over the run.
            target = rate * (0.4 + 0.6 * now / seconds)
            make = hospital_claim if rng.random() < 0.4 else pharmacy_claim
            call = stub.CheckClaim(make(sent, rng), timeout=5)
            pending.add(asyncio.ensure_future(call))
            sent += 1
            if len(pending) > 64:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            await asyncio.sleep(max(0.0, sent / target - (loop.time() - start)) if target else 0)
        await asyncio.gather(*pending, return_exceptions=True)
    return sent


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def by_label(samples: Samples, name: str, label: str, **labels: str) -> dict[str, float]:
    want = set(labels.items())
    out: dict[str, float] = {}
    for (n, ls), v in samples.items():
        if n == name and want <= ls:
            key = dict(ls).get(label, "")
            out[key] = out.get(key, 0.0) + v
    return out


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """histogram_quantile over cumulative (upper bound, count) pairs, as PromQL does."""
    if not buckets or buckets[-1][1] <= 0:
        return float("nan")
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            width = count - lower_count
            return lower_bound + (bound - lower_bound) * (
                (rank - lower_count) / width if width else 0
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def latency_buckets(before: Samples, after: Samples) -> list[tuple[float, float]]:
    name = "eligibility_rpc_duration_seconds_bucket"
    delta = {
        float(le): by_label(after, name, "le", method="CheckClaim", service=SERVICE).get(le, 0.0)
        - by_label(before, name, "le", method="CheckClaim", service=SERVICE).get(le, 0.0)
        for le in by_label(after, name, "le", method="CheckClaim", service=SERVICE)
    }
    return sorted(delta.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("ops/grafana/panels.png"))
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=200.0, help="claims per second at the end")
    parser.add_argument("--scrape-s", type=float, default=2.0)
    args = parser.parse_args()

    with RedisProcess() as redis_server, tempfile.TemporaryDirectory() as tmp:
        prefix = "dashboard"
        publish(redis_server.url, prefix, Path(tmp) / "a")
        metrics_port = free_port()
        with GatewayProcess(
            redis_server.url, prefix, "--metrics-port", str(metrics_port)
        ) as gateway:
            scrapes: list[tuple[float, Samples]] = []
            started = time.monotonic()

            async def run() -> int:
                load = asyncio.ensure_future(drive(gateway.address, args.seconds, args.rate))
                republished = False
                while not load.done():
                    scrapes.append((time.monotonic() - started, scrape(metrics_port)))
                    if not republished and time.monotonic() - started > args.seconds / 2:
                        await asyncio.to_thread(publish, redis_server.url, prefix, Path(tmp) / "b")
                        republished = True
                    await asyncio.sleep(args.scrape_s)
                scrapes.append((time.monotonic() - started, scrape(metrics_port)))
                return load.result()

            sent = asyncio.run(run())
    plot(scrapes, args.out, sent)
    print(f"{sent} claims sent; {len(scrapes)} scrapes; wrote {args.out}")


def plot(scrapes: list[tuple[float, Samples]], out: Path, sent: int) -> None:
    times: list[float] = []
    claims: dict[str, list[float]] = {"HOSPITAL": [], "PHARMACY": []}
    p50: list[float] = []
    p99: list[float] = []
    reasons: dict[str, list[float]] = {}
    overrides: list[float] = []
    age: list[float] = []
    version: list[float] = []
    for (t0, before), (t1, after) in itertools.pairwise(scrapes):
        dt_s = t1 - t0
        times.append(t1)
        for channel, series in claims.items():
            count = "eligibility_claim_lines_count"
            series.append(
                (total(after, count, channel=channel) - total(before, count, channel=channel))
                / dt_s
            )
        buckets = latency_buckets(before, after)
        p50.append(quantile(0.5, buckets) * 1e3)
        p99.append(quantile(0.99, buckets) * 1e3)
        name = "eligibility_lines_decided_total"
        now = by_label(after, name, "reason", decision="REJECT")
        then = by_label(before, name, "reason", decision="REJECT")
        for reason in set(now) | set(reasons):
            reasons.setdefault(reason, [0.0] * (len(times) - 1))
            reasons[reason].append((now.get(reason, 0.0) - then.get(reason, 0.0)) / dt_s)
        name = "eligibility_emergency_overrides_total"
        overrides.append((total(after, name) - total(before, name)) / dt_s)
        age.append(total(after, "eligibility_index_age_seconds"))
        version.append(total(after, "eligibility_index_version"))

    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
    fig.suptitle(
        "Eligibility gateway: key dashboard panels, drawn with matplotlib from real /metrics "
        f"scrapes of a local run ({sent} claims; not a Grafana screenshot)",
        fontsize=11,
    )
    ax = axes[0][0]
    for channel, series in claims.items():
        ax.plot(times, series, label=f"claims/s {channel}")
    ax.set_title("Throughput")
    ax.set_ylabel("claims/s")
    ax.legend(fontsize=8)
    ax = axes[0][1]
    ax.plot(times, p50, label="p50")
    ax.plot(times, p99, label="p99")
    ax.set_title("CheckClaim latency (gateway side)")
    ax.set_ylabel("ms")
    ax.legend(fontsize=8)
    ax = axes[0][2]
    for reason, series in sorted(reasons.items()):
        ax.plot(times, series, label=reason)
    ax.set_title("Rejections by reason")
    ax.set_ylabel("lines/s")
    ax.legend(fontsize=7)
    ax = axes[1][0]
    ax.plot(times, overrides, color="tab:red")
    ax.set_title("Emergency overrides")
    ax.set_ylabel("lines/s")
    ax = axes[1][1]
    ax.plot(times, age, color="tab:green")
    ax.set_title("Data freshness: index age (republished half way)")
    ax.set_ylabel("s")
    ax = axes[1][2]
    ax.step(times, version, where="post", color="tab:purple")
    ax.set_title("Index version")
    for row in axes:
        for ax in row:
            ax.set_xlabel("seconds into the run")
            ax.grid(alpha=0.3)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)


if __name__ == "__main__":
    main()
