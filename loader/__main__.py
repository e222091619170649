"""``python -m loader`` / ``eligibility-loader``: validate, build and publish snapshots.

Subcommands::

    load    --registry FILE [--status FILE] [--ledger FILE [--policy NAME]]
            [--format csv|jsonl] [--redis-url URL] [--prefix P] [--dry-run]
    explain --registry FILE --ledger FILE [--policy NAME] CODE
    sample  --out DIR [--practitioners N] [--seed S] [--format csv|jsonl]
    change  --registry FILE [--status FILE] [--ledger FILE [--policy NAME]]
            [--expect-snapshot V] [--redis-url URL] [--prefix P] [--dry-run]
    status  [--redis-url URL] [--prefix P]

``--redis-url`` and ``--prefix`` default to ``ELIG_REDIS_URL`` and
``ELIG_PREFIX`` (``elig``): the environment is read here and nowhere else.

Exit codes: 0 done; 1 not published (Redis unreachable, a newer snapshot
already current) or, for ``status``, nothing published yet; 2 a bad input
record or bad usage; nothing is published in either failure case.

The load is ``read_inputs`` -> ``derive_from_ledger`` (with ``--ledger``) ->
``build_snapshot`` -> ``publish_snapshot``. A practitioner's status comes
from the status feed or from the scoring ledger, never both: a load in which
one practitioner appears in both is refused (the feed's record is named), so
that no source silently overrides the other.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis

from contract.changes import index_version
from contract.codes import decode_practitioner
from contract.errors import ChangeNotPublishedError, InvalidCodeError, LoadError, StalePublishError
from contract.reads import read_change_seq, read_current_version, read_manifest
from contract.snapshot import ARRAY_DTYPES, Arrays, Keys
from loader.build import PointsTimelines, build_arrays
from loader.changes import DEFAULT_STREAM_MAX_ENTRIES, publish_change
from loader.explain import explain_practitioner
from loader.ledger import read_ledger
from loader.points import Ledger, PointsResult, RegistrationStarts, derive_statuses
from loader.policy import available_policies, load_policy
from loader.publish import publish_snapshot
from loader.registry import Registry, read_registry
from loader.sample import DEFAULT_PRACTITIONERS, DEFAULT_SEED, write_sample
from loader.status_feed import StatusFeed, Timelines, feed_timelines, read_status_feed
from loader.tables import FileFormat
from loader.timeline import StatusChange

ENV_REDIS_URL = "ELIG_REDIS_URL"
ENV_PREFIX = "ELIG_PREFIX"
DEFAULT_PREFIX = "elig"

EXIT_OK = 0
EXIT_NOT_PUBLISHED = 1
EXIT_BAD_INPUT = 2

log = logging.getLogger("loader")


@dataclass(frozen=True)
class Inputs:
    """The validated input files."""

    registry: Registry
    status_feed: StatusFeed | None
    timelines: Timelines  # from the status feed


def read_inputs(
    registry_path: Path | str,
    status_path: Path | str | None,
    file_format: FileFormat | None = None,
) -> Inputs:
    """Read and validate the registry, then the status feed against it; raise ``LoadError``."""
    registry = read_registry(registry_path, file_format=file_format)
    if status_path is None:
        return Inputs(registry, None, {})
    feed = read_status_feed(status_path, registry.practitioners, file_format=file_format)
    return Inputs(registry, feed, feed_timelines(feed))


def derive_from_ledger(
    inputs: Inputs, ledger_path: Path | str, policy_name: str, file_format: FileFormat | None = None
) -> tuple[Ledger, PointsResult]:
    """Read the scoring ledger, check it against the registry and the status
    feed, and replay it under the named policy; raise ``LoadError``."""
    policy = load_policy(policy_name)
    ledger = read_ledger(ledger_path, policy, file_format=file_format)
    registered = inputs.registry.practitioners
    if len(ledger):
        pos = np.minimum(np.searchsorted(registered, ledger.practitioner), len(registered) - 1)
        unknown = np.flatnonzero(registered[pos] != ledger.practitioner)
        if len(unknown):
            row = int(unknown[0])
            raise LoadError(
                ledger.file,
                int(ledger.line[row]),
                "practitioner_code",
                f"{decode_practitioner(int(ledger.practitioner[row]))} is not in the registry",
            )
    feed = inputs.status_feed
    if feed is not None and len(feed) and len(ledger):
        both = np.flatnonzero(np.isin(feed.practitioner, ledger.practitioner))
        if len(both):
            row = int(both[0])
            raise LoadError(
                feed.file,
                int(feed.lines[row]),
                "practitioner_code",
                f"{decode_practitioner(int(feed.practitioner[row]))} also has scoring-ledger "
                f"events in {ledger.file}; give a practitioner's status in one source",
            )
    result = derive_statuses(ledger, policy, RegistrationStarts.from_registry(inputs.registry))
    return ledger, result


def build_snapshot(
    inputs: Inputs,
    *,
    extra_timelines: Mapping[int, Sequence[StatusChange]] | None = None,
    points: PointsTimelines | None = None,
) -> tuple[Arrays, dict[str, Any]]:
    """The snapshot arrays and their manifest ``meta`` for validated inputs.

    ``extra_timelines`` (e.g. derived by the points engine) replace the
    status feed's timeline of the same practitioner; ``points`` are the
    points change points. Both keyed by practitioner key.
    """
    timelines: dict[int, Sequence[StatusChange]] = dict(inputs.timelines)
    timelines.update(extra_timelines or {})
    arrays = build_arrays(inputs.registry, timelines, points)
    meta: dict[str, Any] = {
        "registry": {"file": inputs.registry.file, "records": len(inputs.registry)},
        "counts": _counts(arrays),
    }
    if inputs.status_feed is not None:
        meta["status_feed"] = {
            "file": inputs.status_feed.file,
            "records": len(inputs.status_feed),
        }
    return arrays, meta


def _counts(arrays: Arrays) -> dict[str, int]:
    return {
        "practitioners": len(arrays["prac_codes"]),
        "registrations": len(arrays["reg_inst"]),
        "institutions": len(arrays["inst_codes"]),
        "status_changes": len(arrays["st_key"]),
        "points_changes": len(arrays["pt_key"]),
    }


def _redis(url: str | None) -> redis.Redis:
    if not url:
        raise _UsageError(f"no Redis: give --redis-url or set {ENV_REDIS_URL}")
    return redis.Redis.from_url(url, socket_connect_timeout=5)


class _UsageError(Exception):
    pass


def _read_and_build(args: argparse.Namespace) -> tuple[Inputs, Arrays, dict[str, Any]]:
    """Read ``--registry``/``--status``/``--ledger`` and build their arrays and meta
    (the statuses of ledger practitioners derived under ``--policy``)."""
    inputs = read_inputs(args.registry, args.status, args.format)
    if args.ledger is None:
        arrays, meta = build_snapshot(inputs)
        return inputs, arrays, meta
    ledger, derived = derive_from_ledger(inputs, args.ledger, args.policy, args.format)
    arrays, meta = build_snapshot(
        inputs, extra_timelines=derived.timelines(), points=derived.points_timelines()
    )
    meta["has_points"] = True
    meta["ledger"] = {"file": ledger.file, "records": len(ledger), "policy": args.policy}
    return inputs, arrays, meta


def _cmd_load(args: argparse.Namespace) -> int:
    if args.status is None and args.ledger is None:
        raise _UsageError("give --status, --ledger or both")
    inputs, arrays, meta = _read_and_build(args)
    print(f"registry: {len(inputs.registry)} records from {inputs.registry.file}")
    if inputs.status_feed is not None:
        feed = inputs.status_feed
        print(f"status feed: {len(feed)} records from {feed.file}")
    if "ledger" in meta:
        print(f"scoring ledger: {meta['ledger']['records']} events, policy {args.policy}")
    for name, count in meta["counts"].items():
        print(f"{name}: {count}")
    if args.dry_run:
        print("dry run: nothing published")
        return EXIT_OK
    client = _redis(args.redis_url)
    try:
        result = publish_snapshot(client, Keys(args.prefix), arrays, meta)
    finally:
        client.close()
    print(f"published version {result.version} (previous: {result.previous or 'none'})")
    return EXIT_OK


def _cmd_explain(args: argparse.Namespace) -> int:
    policy = load_policy(args.policy)
    registry = read_registry(args.registry, file_format=args.format)
    ledger = read_ledger(args.ledger, policy, file_format=args.format)
    try:
        explanation = explain_practitioner(
            ledger, policy, RegistrationStarts.from_registry(registry), args.practitioner_code
        )
    except InvalidCodeError as exc:
        raise _UsageError(str(exc)) from exc
    print(explanation.text())
    return EXIT_OK


def _cmd_sample(args: argparse.Namespace) -> int:
    files = write_sample(args.out, args.practitioners, args.seed, args.format)
    print(f"wrote {files.registry} ({files.registry_records} records)")
    print(f"wrote {files.status} ({files.status_records} records)")
    print(f"wrote {files.ledger} ({files.ledger_records} records)")
    return EXIT_OK


def _cmd_change(args: argparse.Namespace) -> int:
    """Publish the complete new records of the practitioners in the files (loader.changes)."""
    if args.status is None and args.ledger is None:
        raise _UsageError("give --status, --ledger or both (an empty file: no sanctions)")
    _, arrays, _ = _read_and_build(args)
    names = [decode_practitioner(int(key)) for key in arrays["prac_codes"][:10]]
    more = len(arrays["prac_codes"]) - len(names)
    print(f"change: {len(arrays['prac_codes'])} practitioners: {', '.join(names)}"
          + (f" and {more} more" if more else ""))  # fmt: skip
    if args.dry_run:
        print("dry run: nothing published")
        return EXIT_OK
    client = _redis(args.redis_url)
    try:
        result = publish_change(
            client,
            Keys(args.prefix),
            arrays,
            expect_snapshot=args.expect_snapshot,
            stream_max_entries=args.stream_max_entries,
        )
    finally:
        client.close()
    print(
        f"published change {result.seq} on top of snapshot {result.base} "
        f"(index_version {result.index_version}, stream entry {result.stream_id})"
    )
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    keys = Keys(args.prefix)
    client = _redis(args.redis_url)
    try:
        version = read_current_version(client, keys)
        manifest = read_manifest(client, keys, version) if version is not None else None
        changes = read_change_seq(client, keys, version) if version is not None else 0
    finally:
        client.close()
    if version is None:
        print(f"no snapshot published under prefix {args.prefix!r}")
        return EXIT_NOT_PUBLISHED
    print(f"current version: {version}")
    print(f"live changes on top: {changes} (index_version {index_version(version, changes)})")
    if manifest is None:
        print("manifest: missing")
        return EXIT_NOT_PUBLISHED
    print(f"created at: {manifest.created_at}")
    for name in ARRAY_DTYPES:
        print(f"{name}: {manifest.lengths[name]}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser; defaults come from the environment."""
    parser = argparse.ArgumentParser(
        prog="eligibility-loader",
        description="Validate registry and status files, build a snapshot, publish it to Redis.",
        epilog="exit codes: 0 done, 1 not published / nothing published, 2 bad input or usage",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def redis_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--redis-url",
            default=os.environ.get(ENV_REDIS_URL),
            help=f"Redis to publish to (default: ${ENV_REDIS_URL})",
        )
        sub.add_argument(
            "--prefix",
            default=os.environ.get(ENV_PREFIX, DEFAULT_PREFIX),
            help=f"Redis key prefix (default: ${ENV_PREFIX} or {DEFAULT_PREFIX!r})",
        )

    load = commands.add_parser("load", help="validate, build and publish a snapshot")
    load.add_argument("--registry", required=True, type=Path, help="registry file (.csv/.jsonl)")
    load.add_argument("--status", type=Path, help="status feed file (.csv/.jsonl)")
    policies = ", ".join(available_policies())
    load.add_argument(
        "--ledger", type=Path, help="scoring ledger (.csv/.jsonl): derive statuses from points"
    )
    load.add_argument(
        "--policy", default="national", help=f"points policy ({policies}; default national)"
    )
    load.add_argument(
        "--format", choices=("csv", "jsonl"), help="input format (default: by file extension)"
    )
    load.add_argument(
        "--dry-run", action="store_true", help="validate and build, print counts, do not publish"
    )
    redis_options(load)
    load.set_defaults(run=_cmd_load)

    explain = commands.add_parser(
        "explain", help="show which ledger events produced which status changes of one person"
    )
    explain.add_argument("--registry", required=True, type=Path, help="registry file")
    explain.add_argument("--ledger", required=True, type=Path, help="scoring ledger file")
    explain.add_argument("--policy", default="national", help=f"({policies}; default national)")
    explain.add_argument("--format", choices=("csv", "jsonl"), help="input format")
    explain.add_argument("practitioner_code", help="e.g. D110105000123")
    explain.set_defaults(run=_cmd_explain)

    sample = commands.add_parser("sample", help="write a deterministic sample data set")
    sample.add_argument("--out", required=True, type=Path, help="directory to write into")
    sample.add_argument(
        "--practitioners", type=int, default=DEFAULT_PRACTITIONERS, help="random staff count"
    )
    sample.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    sample.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    sample.set_defaults(run=_cmd_sample)

    change = commands.add_parser(
        "change",
        help="publish new records of a few practitioners on top of the current snapshot",
        description="The files hold ALL the records of the practitioners who changed (every "
        "registry row, every status record or ledger event); each practitioner named gets "
        "exactly that record, everyone else is untouched. Running gateways apply it within "
        "milliseconds; the next full load must include it.",
    )
    change.add_argument("--registry", required=True, type=Path, help="their registry rows")
    change.add_argument("--status", type=Path, help="their status feed records")
    change.add_argument("--ledger", type=Path, help="their scoring ledger events")
    change.add_argument("--policy", default="national", help=f"({policies}; default national)")
    change.add_argument("--format", choices=("csv", "jsonl"), help="input format")
    change.add_argument(
        "--expect-snapshot",
        type=int,
        help="publish only if this snapshot version is still current (default: the current one)",
    )
    change.add_argument(
        "--stream-max-entries",
        type=int,
        default=DEFAULT_STREAM_MAX_ENTRIES,
        help=f"entries the change stream keeps (default {DEFAULT_STREAM_MAX_ENTRIES})",
    )
    change.add_argument("--dry-run", action="store_true", help="validate only, do not publish")
    redis_options(change)
    change.set_defaults(run=_cmd_change)

    status = commands.add_parser("status", help="show the published version and its counts")
    redis_options(status)
    status.set_defaults(run=_cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except LoadError as exc:
        print(f"error: {exc}; nothing published", file=sys.stderr)
        return EXIT_BAD_INPUT
    except _UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (StalePublishError, ChangeNotPublishedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NOT_PUBLISHED
    except redis.RedisError as exc:
        print(f"error: Redis: {exc}", file=sys.stderr)
        return EXIT_NOT_PUBLISHED
    return code


if __name__ == "__main__":
    sys.exit(main())
