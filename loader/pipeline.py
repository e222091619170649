"""The loader's work: input files -> validated columns -> snapshot -> Redis.

A load is ``read_inputs`` -> ``derive_from_ledger`` (with a ledger) ->
``end_registrations_at_terminations`` -> ``build_snapshot``, together
``read_and_build``; then ``load``
publishes the result as the new snapshot (``loader.publish``) or ``change``
publishes it as a live change on top of the current one (``loader.changes``).
``read_status`` reads what is published; ``explain`` tells how one
practitioner's ledger events became status changes.

A practitioner's status comes from the status feed or from the scoring
ledger, never both: a load in which one practitioner appears in both is
refused (the feed's record is named), so that no source silently overrides
the other.

Every function takes plain arguments (paths, names, where Redis is: a URL or a
``contract.redis_target.RedisTarget``, Sentinel included) and returns
a result dataclass; ``loader.cli`` parses arguments and prints. Errors:
``LoadError`` for a bad input record (nothing is published),
``StalePublishError`` / ``ChangeNotPublishedError`` when not published, and
Redis errors as they come.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import redis

from contract.changes import index_version
from contract.codes import decode_practitioner
from contract.errors import LoadError
from contract.reads import read_change_seq, read_current_version, read_manifest
from contract.redis_target import RedisTarget
from contract.signing import Signer
from contract.snapshot import Arrays, Keys, Manifest
from loader.build import PointsTimelines, build_arrays
from loader.changes import DEFAULT_STREAM_MAX_ENTRIES, ChangeResult, publish_change
from loader.explain import Explanation, explain_practitioner
from loader.ledger import read_ledger
from loader.points import Ledger, PointsResult, RegistrationStarts, derive_statuses
from loader.policy import load_policy
from loader.publish import (
    ANY_VERSION,
    DEFAULT_WAIT_TIMEOUT_MS,
    PublishResult,
    publish_snapshot,
)
from loader.registry import Registry, read_registry
from loader.status_feed import StatusFeed, Timelines, feed_timelines, read_status_feed
from loader.tables import FileFormat
from loader.timeline import StatusChange

DEFAULT_POLICY = "national"


@dataclass(frozen=True)
class Inputs:
    """The validated input files."""

    registry: Registry
    status_feed: StatusFeed | None
    timelines: Timelines  # from the status feed


@dataclass(frozen=True)
class Built:
    """Validated inputs and the snapshot arrays and manifest ``meta`` built from them."""

    inputs: Inputs
    arrays: Arrays
    meta: dict[str, Any]


@dataclass(frozen=True)
class PublishedStatus:
    """What is published under a prefix: the current snapshot version (None
    if nothing is), the live changes on top of it, and its manifest (None if
    missing)."""

    version: int | None
    changes: int
    manifest: Manifest | None

    @property
    def index_version(self) -> int:
        """The ``index_version`` gateways report for this snapshot and its changes."""
        return index_version(self.version or 0, self.changes)


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


def end_registrations_at_terminations(inputs: Inputs, derived: PointsResult) -> tuple[Inputs, int]:
    """SPEC §7: a termination ends the practitioner's registrations that began
    before it (登记备案状态维护为终止), even where the registry leaves
    ``deregistered_on`` empty; only registrations after the bar count again.
    The points engine says which records end and when (``closed_rows``,
    ``closed_on``); return the inputs with them ended, and how many."""
    closed = len(derived.closed_rows)
    if closed == 0:
        return inputs, 0
    registry = inputs.registry.with_registrations_ended(derived.closed_rows, derived.closed_on)
    return replace(inputs, registry=registry), closed


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


def read_and_build(
    registry_path: Path | str,
    status_path: Path | str | None = None,
    ledger_path: Path | str | None = None,
    policy_name: str = DEFAULT_POLICY,
    file_format: FileFormat | None = None,
) -> Built:
    """Read the registry, status feed and scoring ledger and build their arrays
    and meta (the statuses of ledger practitioners derived under the policy);
    raise ``LoadError``."""
    inputs = read_inputs(registry_path, status_path, file_format)
    if ledger_path is None:
        arrays, meta = build_snapshot(inputs)
        return Built(inputs, arrays, meta)
    ledger, derived = derive_from_ledger(inputs, ledger_path, policy_name, file_format)
    inputs, closed = end_registrations_at_terminations(inputs, derived)
    arrays, meta = build_snapshot(
        inputs, extra_timelines=derived.timelines(), points=derived.points_timelines()
    )
    meta["has_points"] = True
    meta["ledger"] = {
        "file": ledger.file,
        "records": len(ledger),
        "policy": policy_name,
        "registrations_closed_by_terminations": closed,
    }
    return Built(inputs, arrays, meta)


def load(
    built: Built,
    where: RedisTarget | str,
    prefix: str,
    *,
    expect_current: int | None = ANY_VERSION,
    signer: Signer | None = None,
    wait_replicas: int | None = None,
    wait_timeout_ms: int = DEFAULT_WAIT_TIMEOUT_MS,
) -> PublishResult:
    """Publish ``built`` as the new current snapshot under ``prefix``, only on top
    of ``expect_current`` (None: nothing published yet; ``ANY_VERSION``: any),
    signed by ``signer``, on the primary; then wait for ``wait_replicas``
    replicas (``loader.publish``)."""
    client = _connect(where)
    try:
        return publish_snapshot(
            client,
            Keys(prefix),
            built.arrays,
            built.meta,
            expect_current=expect_current,
            signer=signer,
            wait_replicas=wait_replicas,
            wait_timeout_ms=wait_timeout_ms,
        )
    finally:
        client.close()


def change(
    built: Built,
    where: RedisTarget | str,
    prefix: str,
    *,
    expect_snapshot: int | None = None,
    stream_max_entries: int = DEFAULT_STREAM_MAX_ENTRIES,
    signer: Signer | None = None,
    wait_replicas: int | None = None,
    wait_timeout_ms: int = DEFAULT_WAIT_TIMEOUT_MS,
) -> ChangeResult:
    """Publish the complete new records of the practitioners in ``built`` as a
    live change on top of the current snapshot (``loader.changes``), on the
    primary; then wait for ``wait_replicas`` replicas."""
    client = _connect(where)
    try:
        return publish_change(
            client,
            Keys(prefix),
            built.arrays,
            expect_snapshot=expect_snapshot,
            stream_max_entries=stream_max_entries,
            signer=signer,
            wait_replicas=wait_replicas,
            wait_timeout_ms=wait_timeout_ms,
        )
    finally:
        client.close()


def read_current(where: RedisTarget | str, prefix: str) -> int | None:
    """The snapshot version current under ``prefix`` (None: nothing published)."""
    client = _connect(where)
    try:
        return read_current_version(client, Keys(prefix))
    finally:
        client.close()


def read_status(where: RedisTarget | str, prefix: str) -> PublishedStatus:
    """The snapshot version published under ``prefix``, its changes and manifest."""
    keys = Keys(prefix)
    client = _connect(where)
    try:
        version = read_current_version(client, keys)
        manifest = read_manifest(client, keys, version) if version is not None else None
        changes = read_change_seq(client, keys, version) if version is not None else 0
    finally:
        client.close()
    return PublishedStatus(version, changes, manifest)


def explain(
    registry_path: Path | str,
    ledger_path: Path | str,
    policy_name: str,
    practitioner_code: str,
    file_format: FileFormat | None = None,
) -> Explanation:
    """Which ledger events produced which status changes of one practitioner;
    raise ``LoadError`` for bad files, ``InvalidCodeError`` for a bad code."""
    policy = load_policy(policy_name)
    registry = read_registry(registry_path, file_format=file_format)
    ledger = read_ledger(ledger_path, policy, file_format=file_format)
    return explain_practitioner(
        ledger, policy, RegistrationStarts.from_registry(registry), practitioner_code
    )


def _connect(where: RedisTarget | str) -> redis.Redis:
    """A client of the primary (through Sentinel when ``where`` says so)."""
    target = RedisTarget(url=where) if isinstance(where, str) else where
    return target.client(socket_connect_timeout=5)
