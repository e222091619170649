"""What the metrics cost on the decision path: ``EligibilityServicer.check_claim``
on a 20-line hospital claim, with and without the claim metrics observer, and
the interceptor-free observer call on its own.

    python -m bench.metrics_overhead [--lines 20] [--number 20000]

Prints microseconds per claim (best of --repeat interleaved timeit runs). Not run by the tests.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

import numpy as np
import redis.asyncio as aioredis

from contract.days import today_day
from gateway.claims import ParsedClaim, parse_claim
from gateway.decide import Decisions, Policy, decide_lines
from gateway.index import IndexHolder
from gateway.ops.audit import OverrideAudit
from gateway.ops.metrics import GatewayMetrics
from gateway.servicer import EligibilityServicer
from tests.factory import build_index
from tests.ops_data import ACTIVE, ELSEWHERE, PEOPLE, SUSPENDED, TERMINATED, hospital_claim, line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=20)
    parser.add_argument("--number", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    holder = IndexHolder()
    holder.swap(build_index(PEOPLE))
    # Never flushed here: the client is never connected.
    audit = OverrideAudit(aioredis.Redis.from_url("redis://127.0.0.1:1/0"), "bench:overrides")
    codes = [ACTIVE, SUSPENDED, TERMINATED, ELSEWHERE, "D1101-BAD"]
    request = hospital_claim(
        "BENCH-1", *(line(codes[i % len(codes)], str(i), 100 + i) for i in range(args.lines))
    )
    paid = hospital_claim("BENCH-2", *(line(ACTIVE, str(i), 100 + i) for i in range(args.lines)))
    policy = Policy()
    plain = EligibilityServicer(holder, policy, max_lines_per_claim=1000, overrides=audit)
    metrics = GatewayMetrics(holder, audit=audit)
    observed = EligibilityServicer(
        holder, policy, max_lines_per_claim=1000, overrides=audit, observer=metrics
    )
    index = holder.current
    assert index is not None
    decided = plain.check_claim(request)
    assert len(decided.lines) == args.lines

    claim = parse_claim(request, max_lines=1000, today_day=today_day())

    def decide(claim: ParsedClaim) -> Decisions:
        assert index is not None
        return decide_lines(
            index,
            policy,
            pharmacy=False,
            institution_id=index.institution_id(claim.institution_key),
            principal_ok=False,
            keys=np.array(claim.keys, dtype=np.int64),
            days=np.array(claim.days, dtype=np.int64),
            emergency=np.array(claim.emergency, dtype=np.bool_),
        )

    decisions = decide(claim)
    paid_decisions = decide(parse_claim(paid, max_lines=1000, today_day=today_day()))

    def per_call_us(fn: Callable[[], object]) -> float:
        seconds = timeit.timeit(fn, number=args.number)
        audit.pending.clear()
        return float(seconds / args.number * 1e6)

    cases: dict[str, Callable[[], object]] = {
        "check_claim without metrics": lambda: plain.check_claim(request),
        "check_claim with metrics": lambda: observed.check_claim(request),
        "all-PAY claim without metrics": lambda: plain.check_claim(paid),
        "all-PAY claim with metrics": lambda: observed.check_claim(paid),
        "observe_claim alone (mixed)": lambda: metrics.observe_claim(request, False, decisions),
        "observe_claim alone (all-PAY)": lambda: metrics.observe_claim(paid, False, paid_decisions),
    }
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(args.repeat):  # interleaved: a busy machine slows every case alike
        for name, fn in cases.items():
            best[name] = min(best[name], per_call_us(fn))
    print(f"{args.lines}-line claims, best of {args.repeat} x {args.number} (microseconds):")
    for name, us in best.items():
        print(f"  {name:32} {us:8.2f}")
    for kind, a, b in (
        ("mixed", "check_claim with metrics", "check_claim without metrics"),
        ("all-PAY", "all-PAY claim with metrics", "all-PAY claim without metrics"),
    ):
        print(f"  metrics overhead, {kind} claim: {best[a] - best[b]:8.2f}")


if __name__ == "__main__":
    main()
