"""``python -m gateway.ops``: review tools for operations and the fund's
auditors, reading the same Redis the gateways read.

    python -m gateway.ops overrides [--since 2026-11-01] [--until 2026-11-26]
        [--institution H11010500001] [--practitioner D110105000123]
        [--limit 1000] [--by-practitioner] [--format table|csv|jsonl]
    python -m gateway.ops overrides --verify [--allow-trimmed-head]
    python -m gateway.ops overrides --refill-from SPOOL_DIR
    python -m gateway.ops sanctions [--date 2026-11-25] [--institution CODE]
        [--min-staff 1] [--top 50] [--format table|csv|jsonl]

``overrides`` lists the emergency-override audit records (gateway.ops.audit),
oldest first; dates are China Standard Time days (``--until`` is exclusive)
or ISO 8601 times. ``--by-practitioner`` counts them per practitioner and
institution instead, most first: the view that shows an emergency flag used
as a loophole. A claim line is listed once however often it was retried
(``attempts``); ``delivered`` is false when no answer carrying it reached the
client. ``decided_at`` (the gateway's clock) and ``written_at`` (Redis's)
are ISO 8601 CST times. Client-supplied text is printed with control
characters escaped (``\x1b``), and a CSV cell starting with = + - @ gets a
leading ' so spreadsheets do not run it as a formula; ``jsonl`` keeps numbers
numbers. ``--verify`` checks every gateway's hash chain in the stream (exit
3 on a gap or mismatch); ``--refill-from`` writes back, from a gateway's
spool directory, whatever the stream lost. ``sanctions`` reports, per institution, the share of its
registered staff suspended or terminated on a day (gateway.ops.sanctions), from
the published snapshot.

Redis: ``--redis-url``/``--prefix``, else ``ELIG_REDIS_URL``/``ELIG_PREFIX``
as for the gateway (``rediss://user:password@host:port/0`` works), or
``--redis-sentinel`` + ``--redis-master-name`` (``ELIG_REDIS_SENTINEL``,
``ELIG_REDIS_MASTER_NAME``): always the primary, which ``--refill-from`` writes to.
Exit codes: 0 done, 1 nothing published, 2 bad usage or Redis unreachable,
3 the audit chain is broken (``--verify``).
"""

from __future__ import annotations

import argparse
import collections
import csv
import datetime as dt
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from typing import TextIO

import orjson
import redis

from contract.changes import index_version
from contract.days import CST, date_to_day, today_cst
from contract.errors import SnapshotError
from contract.reads import read_decided
from contract.redis_target import redis_target
from contract.snapshot import Keys
from contract.version import version_line
from gateway.ops.audit import (
    OverrideRecord,
    read_overrides,
    refill_from_spool,
    verify_chains,
)
from gateway.ops.sanctions import InstitutionShare, sanction_shares
from gateway.settings import Settings

EXIT_OK = 0
EXIT_NOT_PUBLISHED = 1
EXIT_USAGE = 2
EXIT_TAMPERED = 3


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


def escape_text(text: str) -> str:
    """Control and format characters (ESC, CR, bidi overrides, ...) as escapes:
    a client-chosen claim id must not drive the reviewer's terminal."""
    if text.isprintable():
        return text
    return "".join(
        c
        if unicodedata.category(c)[0] != "C" and c not in "\u2028\u2029"
        else (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
        for c in text
    )


def csv_cell(value: object) -> object:
    """A cell a spreadsheet shows as text: escaped, and a leading = + - @ (or
    tab / CR) neutralised with ' (OWASP CSV injection)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, str):
        return value
    text = escape_text(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _text_cell(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return escape_text(str(value))


def _write_rows(
    out: TextIO, fmt: str, header: Sequence[str], rows: Iterable[Sequence[object]]
) -> int:
    count = 0
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow([csv_cell(v) for v in row])
            count += 1
    elif fmt == "jsonl":
        for row in rows:
            out.write(orjson.dumps(dict(zip(header, row, strict=True))).decode() + "\n")
            count += 1
    else:
        materialised = [[_text_cell(v) for v in row] for row in rows]
        count = len(materialised)
        widths = [len(h) for h in header]
        for row in materialised:
            widths = [max(w, len(v)) for w, v in zip(widths, row, strict=True)]
        for row in [list(header), *materialised]:
            out.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
            out.write("\n")
    return count


TEXT_COLUMNS = (
    "record_id",
    "claim_id",
    "line_id",
    "practitioner_code",
    "institution_code",
    "channel",
)
NUMBER_COLUMNS = ("service_date", "amount_fen", "index_version")
OVERRIDE_COLUMNS = (
    "written_at",
    "decided_at",
    *TEXT_COLUMNS,
    "service_date",
    "overridden_reason",
    "item_code",
    "amount_fen",
    "index_version",
    "request_id",
    "delivered",
    "attempts",
    "chain",
    "seq",
)


def _number(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text  # not a number (an old or damaged record): shown as it is


def _decided_at(text: str) -> str:
    try:
        moment = dt.datetime.fromtimestamp(float(text), CST)
    except (ValueError, OverflowError, OSError):
        return text
    return moment.isoformat(timespec="milliseconds")


def _override_row(record: OverrideRecord) -> list[object]:
    written = record.written_at.astimezone(CST).isoformat(timespec="milliseconds")
    values: dict[str, object] = {
        name: record.get(name) for name in OVERRIDE_COLUMNS if name not in ("written_at",)
    }
    for name in (*NUMBER_COLUMNS, "seq"):
        values[name] = _number(record.get(name)) if record.get(name) else None
    values["decided_at"] = _decided_at(record.get("decided_at"))
    values["delivered"] = record.delivered
    values["attempts"] = record.attempts
    return [written, *(values[name] for name in OVERRIDE_COLUMNS[1:])]


def _cmd_verify(args: argparse.Namespace, client: redis.Redis, out: TextIO) -> int:
    report = verify_chains(
        client, Keys(args.prefix).overrides, allow_trimmed_head=args.allow_trimmed_head
    )
    for chain, count in sorted(report.chains.items()):
        out.write(f"chain {escape_text(chain)}: {count} entries\n")
    for problem in report.problems:
        out.write(f"{problem.kind}: chain {escape_text(problem.chain)}: {problem.detail}\n")
    if report.problems:
        out.write(f"{len(report.problems)} problems: the audit stream is not intact\n")
        return EXIT_TAMPERED
    out.write(f"{len(report.chains)} chains intact\n")
    return EXIT_OK


def _cmd_overrides(args: argparse.Namespace, client: redis.Redis, out: TextIO) -> int:
    if args.verify:
        return _cmd_verify(args, client, out)
    if args.refill_from:
        written = refill_from_spool(client, Keys(args.prefix).overrides, args.refill_from)
        out.write(f"{written} entries written back from {args.refill_from}\n")
        return EXIT_OK
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
    parser.add_argument("--version", action="version", version=version_line())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--redis-url",
            default=defaults.redis_url,
            help="Redis the gateways read (default: $ELIG_REDIS_URL)",
        )
        sub.add_argument(
            "--redis-sentinel",
            metavar="HOST:PORT,...",
            default=defaults.redis_sentinel,
            help="instead of --redis-url: the Sentinels that know the primary (as for the "
            "gateway; default: $ELIG_REDIS_SENTINEL)",
        )
        sub.add_argument(
            "--redis-master-name",
            metavar="NAME",
            default=defaults.redis_master_name,
            help="with --redis-sentinel: the primary's name (default: $ELIG_REDIS_MASTER_NAME)",
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
    overrides.add_argument(
        "--verify",
        action="store_true",
        help="check every gateway's hash chain in the stream; exit 3 on a gap or mismatch",
    )
    overrides.add_argument(
        "--allow-trimmed-head",
        action="store_true",
        help="with --verify: a chain whose oldest entries were trimmed (MAXLEN) is not a problem",
    )
    overrides.add_argument(
        "--refill-from",
        metavar="SPOOL_DIR",
        help="write back from a gateway's spool directory the entries the stream lacks",
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
    try:
        target = redis_target(args.redis_url, args.redis_sentinel, args.redis_master_name)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if target is None:
        print(
            "error: no Redis: give --redis-url or set ELIG_REDIS_URL (or --redis-sentinel and "
            "--redis-master-name)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    client = target.client(socket_connect_timeout=5)
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
