"""``python -m loader`` / ``eligibility-loader``: arguments in, exit code out.

Subcommands::

    load    --registry FILE [--status FILE] [--ledger FILE [--policy NAME]]
            [--format csv|jsonl] [REDIS] [--prefix P] [--dry-run]
            [--signing-key FILE] [--replace] [--wait-replicas N] [--wait-timeout-ms MS]
    explain --registry FILE --ledger FILE [--policy NAME] CODE
    sample  --out DIR [--practitioners N] [--seed S] [--format csv|jsonl]
    change  --registry FILE [--status FILE] [--ledger FILE [--policy NAME]]
            [--expect-snapshot V] [REDIS] [--prefix P] [--dry-run]
            [--signing-key FILE] [--wait-replicas N] [--wait-timeout-ms MS]
    status  [REDIS] [--prefix P]
    keygen  --out DIR

    REDIS = --redis-url URL | --redis-sentinel HOST:PORT,... --redis-master-name NAME

``--signing-key`` defaults to ``ELIG_SIGNING_KEY_FILE``: the loader signs what
it publishes (``contract.signing``); gateways verify with the public key.

``--redis-url``, ``--redis-sentinel``, ``--redis-master-name`` and ``--prefix``
default to ``ELIG_REDIS_URL``, ``ELIG_REDIS_SENTINEL``, ``ELIG_REDIS_MASTER_NAME``
and ``ELIG_PREFIX`` (``elig``): the environment is read here and nowhere else.
Through Sentinel the loader writes to whichever node is the primary now
(``contract.redis_target``).

``load`` and ``change`` then wait (``WAIT``, ``--wait-timeout-ms``, 2 s) for
``--wait-replicas`` replicas to have the publication: by default 1 when the
primary has a replica online, else 0. Fewer in time: exit 3, saying that it is
published on the primary but may not survive a failover.

``load`` publishes only on top of the version that was current when it
started (compare-and-set): of two loads run at once, the second to finish
is refused (exit 1) and nothing of it is visible; ``--replace`` publishes on
top of whatever is current.

Exit codes: 0 done; 1 not published (Redis unreachable, a newer snapshot
already current) or, for ``status``, nothing published yet; 2 a bad input
record or bad usage; nothing is published in either failure case; 3
published on the primary, but fewer replicas than asked had it in time.
``explain`` exits 2 whenever its explanation reports an error (a registry
record inside a re-registration bar: a load would refuse it), and 1 for a
practitioner not in the registry (the gateway answers NOT_REGISTERED).

This module only parses arguments, prints and maps errors to exit codes; the
work is ``loader.pipeline``'s (and ``loader.sample``'s for ``sample``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from contract.codes import decode_practitioner, encode_practitioner
from contract.errors import (
    ChangeNotPublishedError,
    InvalidCodeError,
    LoadError,
    SignatureError,
    StalePublishError,
)
from contract.redis_target import RedisTarget, redis_target
from contract.signing import Signer, generate_keypair
from contract.snapshot import ARRAY_DTYPES
from contract.version import version_line
from loader import pipeline
from loader.changes import DEFAULT_STREAM_MAX_ENTRIES
from loader.pipeline import DEFAULT_POLICY
from loader.policy import available_policies
from loader.publish import ANY_VERSION, DEFAULT_WAIT_TIMEOUT_MS, Replication
from loader.registry import read_registry
from loader.sample import (
    DEFAULT_PRACTITIONERS,
    DEFAULT_SEED,
    MAX_PRACTITIONERS,
    practitioner_count,
    write_sample,
)

ENV_REDIS_URL = "ELIG_REDIS_URL"
ENV_REDIS_SENTINEL = "ELIG_REDIS_SENTINEL"
ENV_REDIS_MASTER_NAME = "ELIG_REDIS_MASTER_NAME"
ENV_PREFIX = "ELIG_PREFIX"
ENV_SIGNING_KEY = "ELIG_SIGNING_KEY_FILE"
DEFAULT_PREFIX = "elig"

EXIT_OK = 0
EXIT_NOT_PUBLISHED = 1
EXIT_NOT_REGISTERED = 1  # explain: no such practitioner in the registry
EXIT_BAD_INPUT = 2
EXIT_NOT_REPLICATED = 3  # published on the primary, fewer replicas than asked have it


class _UsageError(Exception):
    pass


def _redis(args: argparse.Namespace) -> RedisTarget:
    """Where to publish: --redis-url, or --redis-sentinel with --redis-master-name."""
    try:
        target = redis_target(args.redis_url, args.redis_sentinel, args.redis_master_name)
    except ValueError as exc:
        raise _UsageError(str(exc)) from exc
    if target is None:
        raise _UsageError(
            f"no Redis: give --redis-url (or set {ENV_REDIS_URL}), or --redis-sentinel and "
            f"--redis-master-name (or set {ENV_REDIS_SENTINEL} and {ENV_REDIS_MASTER_NAME})"
        )
    return target


def _replicated(replication: Replication, what: str) -> int:
    """Say what the replicas confirmed; the exit code."""
    if replication.wanted == 0:
        return EXIT_OK
    if replication.confirmed:
        print(f"replicas: {replication.acked} of {replication.wanted} acknowledged")
        return EXIT_OK
    print(f"error: {replication.shortfall(what)}", file=sys.stderr)
    return EXIT_NOT_REPLICATED


def _read_and_build(args: argparse.Namespace) -> pipeline.Built:
    return pipeline.read_and_build(
        args.registry, args.status, args.ledger, args.policy, args.format
    )


def _signer(args: argparse.Namespace) -> Signer | None:
    """The signing key, read before any work (a bad key file is said at once)."""
    if not args.signing_key:
        return None
    try:
        return Signer.from_file(args.signing_key)
    except SignatureError as exc:
        raise _UsageError(str(exc)) from exc


def _warn_if_unsigned(signer: Signer | None) -> None:
    if signer is None:
        print(
            f"warning: no --signing-key ({ENV_SIGNING_KEY}): publishing UNSIGNED data, which "
            "gateways refuse unless started with --allow-unsigned",
            file=sys.stderr,
        )


def _cmd_load(args: argparse.Namespace) -> int:
    if args.status is None and args.ledger is None:
        raise _UsageError("give --status, --ledger or both")
    signer = expect = None
    if not args.dry_run:
        signer = _signer(args)
        # Read first: Redis unreachable is said before minutes of parsing, and
        # the version read now is the one this load publishes on top of.
        expect = pipeline.read_current(_redis(args), args.prefix)
    built = _read_and_build(args)
    inputs, meta = built.inputs, built.meta
    print(f"registry: {len(inputs.registry)} records from {inputs.registry.file}")
    if inputs.status_feed is not None:
        feed = inputs.status_feed
        print(f"status feed: {len(feed)} records from {feed.file}")
    if "ledger" in meta:
        print(f"scoring ledger: {meta['ledger']['records']} events, policy {args.policy}")
        _print_closed_registrations(meta)
    for name, count in meta["counts"].items():
        print(f"{name}: {count}")
    if args.dry_run:
        print("dry run: nothing published")
        return EXIT_OK
    _warn_if_unsigned(signer)
    result = pipeline.load(
        built,
        _redis(args),
        args.prefix,
        expect_current=ANY_VERSION if args.replace else expect,
        signer=signer,
        wait_replicas=args.wait_replicas,
        wait_timeout_ms=args.wait_timeout_ms,
    )
    print(
        f"published version {result.version} (previous: {result.previous or 'none'}; "
        f"epoch {result.epoch}; {'signed' if signer else 'UNSIGNED'})"
    )
    return _replicated(result.replication, f"snapshot version {result.version}")


def _cmd_explain(args: argparse.Namespace) -> int:
    try:
        key = encode_practitioner(args.practitioner_code)
    except InvalidCodeError as exc:
        raise _UsageError(str(exc)) from exc
    # Not in the registry: the gateway answers NOT_REGISTERED whatever the
    # ledger says, so a replay ("ACTIVE throughout") would mislead. This reads
    # the registry once more than pipeline.explain does; explain is for one person.
    registry = read_registry(args.registry, file_format=args.format)
    if not (registry.practitioner == key).any():
        print(
            f"{decode_practitioner(key)} is not registered in {args.registry}: the gateway "
            "answers NOT_REGISTERED for their claim lines (no status to explain)"
        )
        return EXIT_NOT_REGISTERED
    try:
        explanation = pipeline.explain(
            args.registry, args.ledger, args.policy, args.practitioner_code, args.format
        )
    except InvalidCodeError as exc:
        raise _UsageError(str(exc)) from exc
    print(explanation.text())
    for error in explanation.errors:
        print(f"error: {error}", file=sys.stderr)
    return EXIT_BAD_INPUT if explanation.errors else EXIT_OK


def _print_closed_registrations(meta: dict[str, Any]) -> None:
    closed = meta["ledger"]["registrations_closed_by_terminations"]
    print(f"terminations closed {closed} open registrations (begun before the termination day)")


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
    signer = None
    if not args.dry_run:
        signer = _signer(args)
        # As load does: Redis unreachable, or no snapshot to change, is said
        # before the files are parsed.
        if pipeline.read_current(_redis(args), args.prefix) is None:
            raise ChangeNotPublishedError(
                f"no snapshot is published under prefix {args.prefix!r}: load one first"
            )
    built = _read_and_build(args)
    prac_codes = built.arrays["prac_codes"]
    names = [decode_practitioner(int(key)) for key in prac_codes[:10]]
    more = len(prac_codes) - len(names)
    print(f"change: {len(prac_codes)} practitioners: {', '.join(names)}"
          + (f" and {more} more" if more else ""))  # fmt: skip
    if "ledger" in built.meta:
        _print_closed_registrations(built.meta)
    if args.dry_run:
        print("dry run: nothing published")
        return EXIT_OK
    _warn_if_unsigned(signer)
    result = pipeline.change(
        built,
        _redis(args),
        args.prefix,
        expect_snapshot=args.expect_snapshot,
        stream_max_entries=args.stream_max_entries,
        signer=signer,
        wait_replicas=args.wait_replicas,
        wait_timeout_ms=args.wait_timeout_ms,
    )
    print(
        f"published change {result.seq} on top of snapshot {result.base} "
        f"(index_version {result.index_version}, stream entry {result.stream_id})"
    )
    return _replicated(result.replication, f"change {result.seq} on top of snapshot {result.base}")


def _cmd_keygen(args: argparse.Namespace) -> int:
    try:
        private, public = generate_keypair(args.out)
    except SignatureError as exc:
        raise _UsageError(str(exc)) from exc
    print(f"wrote {private} (private: the loader's --signing-key; keep it secret)")
    print(f"wrote {public} (public: the gateways' --trusted-keys)")
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    published = pipeline.read_status(_redis(args), args.prefix)
    if published.version is None:
        print(f"no snapshot published under prefix {args.prefix!r}")
        return EXIT_NOT_PUBLISHED
    print(f"current version: {published.version}")
    print(f"live changes on top: {published.changes} (index_version {published.index_version})")
    manifest = published.manifest
    if manifest is None:
        print("manifest: missing")
        return EXIT_NOT_PUBLISHED
    print(f"created at: {manifest.created_at}")
    for name in ARRAY_DTYPES:
        print(f"{name}: {manifest.lengths[name]}")
    return EXIT_OK


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (0, 1, 2, ...)")
    return int(text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser; defaults come from the environment."""
    parser = argparse.ArgumentParser(
        prog="eligibility-loader",
        description="Validate registry and status files, build a snapshot, publish it to Redis.",
        epilog="exit codes: 0 done, 1 not published / nothing published, 2 bad input or usage, "
        "3 published on the primary but not confirmed by enough replicas (may not survive a "
        "failover)",
    )
    parser.add_argument("--version", action="version", version=version_line())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def signing_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--signing-key",
            default=os.environ.get(ENV_SIGNING_KEY),
            help=f"the loader's private key (PEM, from `keygen`): sign what is published "
            f"(default: ${ENV_SIGNING_KEY}; without one the data is unsigned)",
        )

    def redis_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--redis-url",
            default=os.environ.get(ENV_REDIS_URL),
            help=f"Redis to publish to (default: ${ENV_REDIS_URL})",
        )
        sub.add_argument(
            "--redis-sentinel",
            metavar="HOST:PORT,...",
            default=os.environ.get(ENV_REDIS_SENTINEL),
            help="instead of --redis-url: the Redis Sentinels to ask which node is the primary "
            "(host:port,...; or redis[s]://user:password@host:port,.../0?... for credentials "
            f"and TLS) (default: ${ENV_REDIS_SENTINEL})",
        )
        sub.add_argument(
            "--redis-master-name",
            metavar="NAME",
            default=os.environ.get(ENV_REDIS_MASTER_NAME),
            help="with --redis-sentinel: the name the Sentinels monitor the primary under "
            f"(default: ${ENV_REDIS_MASTER_NAME})",
        )
        sub.add_argument(
            "--prefix",
            default=os.environ.get(ENV_PREFIX, DEFAULT_PREFIX),
            help=f"Redis key prefix (default: ${ENV_PREFIX} or {DEFAULT_PREFIX!r})",
        )

    def wait_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--wait-replicas",
            type=_count,
            metavar="N",
            help="after publishing, wait for N replicas to have it (WAIT); fewer in time: exit 3 "
            "(default: 1 when the primary has a replica online, else 0)",
        )
        sub.add_argument(
            "--wait-timeout-ms",
            type=_positive,
            default=DEFAULT_WAIT_TIMEOUT_MS,
            metavar="MS",
            help=f"how long to wait for them (default {DEFAULT_WAIT_TIMEOUT_MS})",
        )

    load = commands.add_parser("load", help="validate, build and publish a snapshot")
    load.add_argument("--registry", required=True, type=Path, help="registry file (.csv/.jsonl)")
    load.add_argument("--status", type=Path, help="status feed file (.csv/.jsonl)")
    policies = ", ".join(available_policies())
    load.add_argument(
        "--ledger", type=Path, help="scoring ledger (.csv/.jsonl): derive statuses from points"
    )
    load.add_argument(
        "--policy", default=DEFAULT_POLICY, help=f"points policy ({policies}; default national)"
    )
    load.add_argument(
        "--format", choices=("csv", "jsonl"), help="input format (default: by file extension)"
    )
    load.add_argument(
        "--dry-run", action="store_true", help="validate and build, print counts, do not publish"
    )
    load.add_argument(
        "--replace",
        action="store_true",
        help="publish on top of whatever is current (default: only on top of the version "
        "current when this load started; a concurrent load makes it fail)",
    )
    signing_option(load)
    redis_options(load)
    wait_options(load)
    load.set_defaults(run=_cmd_load)

    keygen = commands.add_parser(
        "keygen", help="make the loader's Ed25519 key pair (signing.key, signing.pub)"
    )
    keygen.add_argument("--out", required=True, type=Path, help="directory to write into")
    keygen.set_defaults(run=_cmd_keygen)

    explain = commands.add_parser(
        "explain", help="show which ledger events produced which status changes of one person"
    )
    explain.add_argument("--registry", required=True, type=Path, help="registry file")
    explain.add_argument("--ledger", required=True, type=Path, help="scoring ledger file")
    explain.add_argument("--policy", default=DEFAULT_POLICY, help=f"({policies}; default national)")
    explain.add_argument("--format", choices=("csv", "jsonl"), help="input format")
    explain.add_argument("practitioner_code", help="e.g. D110105000123")
    explain.set_defaults(run=_cmd_explain)

    sample = commands.add_parser("sample", help="write a deterministic sample data set")
    sample.add_argument("--out", required=True, type=Path, help="directory to write into")
    sample.add_argument(
        "--practitioners",
        type=practitioner_count,
        default=DEFAULT_PRACTITIONERS,
        help=f"random staff count, 0..{MAX_PRACTITIONERS} (default {DEFAULT_PRACTITIONERS})",
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
    change.add_argument("--policy", default=DEFAULT_POLICY, help=f"({policies}; default national)")
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
    signing_option(change)
    redis_options(change)
    wait_options(change)
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
