"""Failover under load (issue 15): the scenario of ``tests/failover_scenario.py``
(a Redis primary, a replica and three Sentinels on loopback; three gateways
following through Sentinel from the replica; a client thread with the published
round_robin + retry service config), run ``--runs`` times:

(a) the primary SIGKILLed: Sentinel promotes the replica, the loader CLI
    publishes a change through Sentinel, every gateway must enforce it;
(b) a gateway SIGKILLed and restarted on its port and spool;
(c) a gateway holding undrained override records (its Redis user could not
    write) SIGKILLed, then restarted on its spool with the write restored.

Reported per run: seconds from the SIGKILL to the promotion (Sentinel's
detection and election: down-after-milliseconds 500 here), from the promotion
to the change published (the loader's discovery of the new primary) and to
the change enforced on every gateway (polling each one's
GetPractitionerStatus), calls failed, lines decided wrong, override records
lost or written twice, a killed gateway back to SERVING.

    python -m bench.failover [--runs 3] [--load-s 1.0] [--interval-ms 3]
        [--read-from replicas|primary] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from tests.failover_scenario import FailoverReport, run_failover


def _row(n: int, report: FailoverReport) -> str:
    return (
        f"run {n}: kill->promotion {report.kill_to_promotion_s:.2f} s, "
        f"promotion->published {report.promotion_to_published_s:.3f} s, "
        f"promotion->enforced on every gateway {report.promotion_to_enforced_s:.3f} s; "
        f"calls {report.calls}, failed {report.failed}, lines {report.lines}, "
        f"wrong {report.wrong}; overrides paid {report.overrides_paid}, "
        f"lost {report.overrides_lost}, written twice {report.written_twice}, "
        f"undrained at kill {report.undrained_at_kill}; gateway restart "
        + "/".join(f"{s:.2f}" for s in report.restart_s)
        + " s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.failover", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--runs", type=int, default=3, help="scenarios in a row (default 3)")
    parser.add_argument(
        "--load-s", type=float, default=1.0, help="load before the first kill (default 1.0)"
    )
    parser.add_argument(
        "--interval-ms",
        type=float,
        default=3.0,
        help="pause between the client's calls (default 3: about 170 claims/s here)",
    )
    parser.add_argument(
        "--read-from",
        choices=("replicas", "primary"),
        default="replicas",
        help="the gateways' --read-from (default replicas, as the cluster test)",
    )
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    args = parser.parse_args(argv)
    reports = []
    for n in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory(prefix="elig-failover-") as directory:
            report = run_failover(
                Path(directory),
                load_s=args.load_s,
                interval_s=args.interval_ms / 1000,
                read_from=args.read_from,
            )
        reports.append(report)
        print(_row(n, report), flush=True)
    enforced = [r.promotion_to_enforced_s for r in reports]
    promotion = [r.kill_to_promotion_s for r in reports]
    median = statistics.median(enforced)
    print(
        f"promotion -> change enforced on every gateway: median {median:.3f} s "
        f"(max {max(enforced):.3f}); SIGKILL -> promotion: median "
        f"{statistics.median(promotion):.2f} s; calls failed {sum(r.failed for r in reports)} of "
        f"{sum(r.calls for r in reports)}, lines wrong {sum(r.wrong for r in reports)} of "
        f"{sum(r.lines for r in reports)}, override records lost "
        f"{sum(r.overrides_lost for r in reports)} of {sum(r.overrides_paid for r in reports)}"
    )
    if args.json is not None:
        args.json.write_text(json.dumps([r.summary() for r in reports], indent=1) + "\n")
    bad = any(r.failed or r.wrong or r.overrides_lost or r.written_twice for r in reports)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
