"""``python -m gateway.ops``: review tools for operations and the fund's
auditors, reading the same Redis the gateways read.

    python -m gateway.ops overrides [--since 2026-11-01] [--until 2026-11-26]
        [--institution H11010500001] [--practitioner D110105000123]
        [--limit 1000] [--by-practitioner] [--format table|csv|jsonl]
    python -m gateway.ops sanctions [--date 2026-11-25] [--institution CODE]
        [--min-staff 1] [--top 50] [--format table|csv|jsonl]

``overrides`` lists the emergency-override audit records (gateway.ops.audit),
oldest first; dates are China Standard Time days (``--until`` is exclusive)
or ISO 8601 times. ``--by-practitioner`` counts them per practitioner and
institution instead, most first: the view that shows an emergency flag used
as a loophole. ``sanctions`` reports, per institution, the share of its
registered staff suspended or terminated on a day (gateway.ops.sanctions), from
the published snapshot.

Redis: ``--redis-url``/``--prefix``, else ``ELIG_REDIS_URL``/``ELIG_PREFIX``
as for the gateway (``rediss://user:password@host:port/0`` works).
Exit codes: 0 done, 1 nothing published, 2 bad usage or Redis unreachable.
"""

from __future__ import annotations

import argparse
import collections
import csv
import datetime as dt
import sys
from collections.abc import Iterable, Sequence
from typing import TextIO

import orjson
import redis

from contract.changes import index_version
from contract.days import CST, date_to_day, today_cst
from contract.errors import SnapshotError
from contract.reads import read_decided
from contract.snapshot import Keys
from gateway.ops.audit import FIELDS, OverrideRecord, read_overrides
from gateway.ops.sanctions import InstitutionShare, sanction_shares
from gateway.settings import Settings

EXIT_OK = 0
EXIT_NOT_PUBLISHED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    pass


def parse_moment(text: str) -> dt.datetime:
    """A CST day (its midnight) or an ISO 8601 time (CST when it has no zone)."""
    try:
        if len(text) == 10:
            return dt.datetime.combine(dt.date.fromisoformat(text), dt.time(), CST)
        moment = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise UsageError(f"{text!r} is not a date YYYY-MM-DD or an ISO 8601 time") from exc
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=CST)


def _write_rows(
    out: TextIO, fmt: str, header: Sequence[str], rows: Iterable[Sequence[object]]
) -> int:
    count = 0
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow(row)
            count += 1
    elif fmt == "jsonl":
        for row in rows:
            out.write(orjson.dumps(dict(zip(header, row, strict=True))).decode() + "\n")
            count += 1
    else:
        materialised = [[str(v) for v in row] for row in rows]
        count = len(materialised)
        widths = [len(h) for h in header]
        for row in materialised:
            widths = [max(w, len(v)) for w, v in zip(widths, row, strict=True)]
        for row in [list(header), *materialised]:
            out.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
            out.write("\n")
    return count


OVERRIDE_COLUMNS = ("written_at", *FIELDS)


def _override_row(record: OverrideRecord) -> list[object]:
    written = record.written_at.astimezone(CST).isoformat(timespec="milliseconds")
    return [written, *(record.get(name) for name in FIELDS)]


def _cmd_overrides(args: argparse.Namespace, client: redis.Redis, out: TextIO) -> int:
    since = parse_moment(args.since) if args.since else None
    until = parse_moment(args.until) if args.until else None
    if since is not None and until is not None and until <= since:
        raise UsageError("--until must be later than --since")
    records = read_overrides(
        client,
        Keys(args.prefix).overrides,
        since=since,
        until=until,
        institution_code=args.institution,
        practitioner_code=args.practitioner,
        limit=None if args.by_practitioner else args.limit,
    )
    if args.by_practitioner:
        counts = collections.Counter(
            (r.get("practitioner_code"), r.get("institution_code")) for r in records
        )
        ranked = counts.most_common(args.limit)
        header = ("practitioner_code", "institution_code", "overrides")
        count = _write_rows(out, args.format, header, ([p, i, n] for (p, i), n in ranked))
    else:
        count = _write_rows(out, args.format, OVERRIDE_COLUMNS, map(_override_row, records))
    if args.format == "table":
        out.write(f"{count} {'rows' if args.by_practitioner else 'override records'}\n")
    return EXIT_OK


SANCTION_COLUMNS = ("institution_code", "staff", "suspended", "terminated", "share")


def _share_row(share: InstitutionShare) -> list[object]:
    return [
        share.institution_code,
        share.staff,
        share.suspended,
        share.terminated,
        round(share.share, 4),
    ]


def _cmd_sanctions(args: argparse.Namespace, client: redis.Redis, out: TextIO) -> int:
    try:
        day_date = dt.date.fromisoformat(args.date) if args.date else today_cst()
    except ValueError as exc:
        raise UsageError(f"--date {args.date!r} is not a date YYYY-MM-DD") from exc
    # Base + overlay: a suspension published by `loader change` counts.
    found = read_decided(client, Keys(args.prefix))
    if found is None:
        print(f"no snapshot published under prefix {args.prefix!r}", file=sys.stderr)
        return EXIT_NOT_PUBLISHED
    manifest, change_seq, arrays = found
    shares = [
        s
        for s in sanction_shares(arrays, date_to_day(day_date))
        if s.staff >= args.min_staff
        and (args.institution is None or s.institution_code == args.institution)
    ][: args.top]
    _write_rows(out, args.format, SANCTION_COLUMNS, map(_share_row, shares))
    if args.format == "table":
        out.write(
            f"{len(shares)} institutions; snapshot version {manifest.version} "
            f"({manifest.created_at}) + {change_seq} changes "
            f"(index_version {index_version(manifest.version, change_seq)}), "
            f"day {day_date.isoformat()}\n"
        )
    return EXIT_OK


def build_parser(defaults: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.ops",
        description="Review emergency overrides and sanctioned staff (reads Redis).",
        epilog="exit codes: 0 done, 1 nothing published, 2 bad usage or Redis unreachable",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--redis-url",
            default=defaults.redis_url,
            help="Redis the gateways read (default: $ELIG_REDIS_URL)",
        )
        sub.add_argument(
            "--prefix", default=defaults.prefix, help=f"key prefix (default {defaults.prefix!r})"
        )
        sub.add_argument("--format", choices=("table", "csv", "jsonl"), default="table")
        sub.add_argument("--institution", help="only this institution, e.g. H11010500001")

    overrides = commands.add_parser("overrides", help="list emergency-override audit records")
    common(overrides)
    overrides.add_argument("--since", help="from this CST day or ISO time (default: the start)")
    overrides.add_argument("--until", help="before this CST day or ISO time (default: now)")
    overrides.add_argument("--practitioner", help="only this practitioner, e.g. D110105000123")
    overrides.add_argument(
        "--limit", type=int, default=1000, help="at most this many rows (default 1000)"
    )
    overrides.add_argument(
        "--by-practitioner",
        action="store_true",
        help="count overrides per practitioner and institution, most first",
    )
    overrides.set_defaults(run=_cmd_overrides)

    sanctions = commands.add_parser(
        "sanctions", help="per institution: share of registered staff suspended or terminated"
    )
    common(sanctions)
    sanctions.add_argument("--date", help="the day, YYYY-MM-DD (default: today, CST)")
    sanctions.add_argument(
        "--min-staff", type=int, default=1, help="leave out smaller institutions (default 1)"
    )
    sanctions.add_argument(
        "--top", type=int, default=50, help="at most this many institutions (default 50)"
    )
    sanctions.set_defaults(run=_cmd_sanctions)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    try:
        defaults = Settings.from_env()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    args = build_parser(defaults).parse_args(argv)
    if not args.redis_url:
        print("error: no Redis: give --redis-url or set ELIG_REDIS_URL", file=sys.stderr)
        return EXIT_USAGE
    client = redis.Redis.from_url(args.redis_url, socket_connect_timeout=5)
    try:
        code: int = args.run(args, client, out or sys.stdout)
        return code
    except (UsageError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SnapshotError as exc:
        print(f"error: published snapshot unreadable: {exc}", file=sys.stderr)
        return EXIT_NOT_PUBLISHED
    except redis.RedisError as exc:
        print(f"error: Redis: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
