"""The one reader of each thing published in Redis: the current version, a
snapshot, and a snapshot's overlay of live changes.

Each reader is written once, without I/O (as h11 keeps its protocol apart
from sockets): a *plan* is a generator that yields a batch of Redis commands,
receives their replies, and finally returns the decoded, validated value.
Two thin drivers run a plan, one over a blocking ``redis.Redis`` (the loader,
the ops tools, the tests) and one over ``redis.asyncio.Redis`` (the
gateway's feed); each batch is one pipelined round trip. So the loader and
the gateway cannot read the same keys in two different ways, and what the
integrity checks add to a format (signatures, digests, epochs) lands here.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar, cast

import redis
import redis.asyncio as aioredis

from .changes import (
    EMPTY_OVERLAY,
    decode_arrays,
    field_text,
    merge_changes,
    signed_body,
    verify_fields,
)
from .errors import SnapshotError
from .signing import Verifier
from .snapshot import ARRAY_DTYPES, Arrays, Keys, Manifest, join_chunks, validate_arrays

T = TypeVar("T")
Command = tuple[str, ...]
# A plan yields a batch of commands, is sent their replies, and returns a T.
Plan = Generator[list[Command], list[Any], T]


class Snapshot(NamedTuple):
    """A snapshot read back from Redis: its manifest and its validated arrays."""

    manifest: Manifest
    arrays: Arrays


@dataclass(frozen=True)
class Overlay:
    """The changes published on top of one snapshot, merged (``contract.changes``).

    ``seq`` changes so far (0: none), ``stream_id`` the change-stream entry
    they reach (where a follower continues; None for a snapshot published
    before live changes existed: follow from the stream's start).
    """

    seq: int
    stream_id: str | None
    arrays: Arrays


def parse_version(raw: bytes | str | None, what: str) -> int | None:
    """A version number stored in Redis; None if absent; ``SnapshotError`` if not one."""
    if raw is None:
        return None
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise SnapshotError(f"{what} holds {text[:40]!r}, not a version number")
    return int(text)


def current_version_plan(keys: Keys) -> Plan[int | None]:
    """The published snapshot version; None if nothing was ever published under the prefix."""
    (raw,) = yield [("GET", keys.current)]
    return parse_version(raw, keys.current)


def manifest_plan(
    keys: Keys, version: int, verifier: Verifier | None = None
) -> Plan[Manifest | None]:
    """The manifest of ``version``; None if it does not exist (any more).

    With ``verifier``, a manifest not signed by one of its keys raises
    ``SignatureError``; without one (tools, ``--allow-unsigned``) it is read as is.
    """
    (raw,) = yield [("GET", keys.manifest(version))]
    if raw is None:
        return None
    manifest = Manifest.from_json(_as_bytes(raw))
    if manifest.version != version:
        raise SnapshotError(f"manifest of snapshot {version} says version {manifest.version}")
    if verifier is not None:
        verifier.verify(manifest.body(), manifest.signed, f"manifest of snapshot {version}")
    return manifest


def snapshot_plan(
    keys: Keys, version: int, verifier: Verifier | None = None
) -> Plan[Snapshot | None]:
    """Snapshot ``version``; None if its manifest is gone; ``SnapshotError`` if it is
    broken: a chunk missing, an array whose bytes do not match the manifest's
    digest, or arrays that break the index's invariants."""
    manifest = yield from manifest_plan(keys, version, verifier)
    if manifest is None:
        return None
    parts = yield [
        ("GET", keys.chunk(version, name, i))
        for name in ARRAY_DTYPES
        for i in range(manifest.chunks[name])
    ]
    arrays: Arrays = {}
    pos = 0
    for name in ARRAY_DTYPES:
        count = manifest.chunks[name]
        chunk_parts = [None if p is None else _as_bytes(p) for p in parts[pos : pos + count]]
        arrays[name] = join_chunks(name, chunk_parts, manifest.lengths[name])
        pos += count
    manifest.check_digests(arrays)
    try:
        validate_arrays(arrays)
    except SnapshotError as exc:
        raise SnapshotError(f"snapshot {version}: {exc}") from exc
    return Snapshot(manifest, arrays)


def current_snapshot_plan(keys: Keys, verifier: Verifier | None = None) -> Plan[Snapshot | None]:
    """The current snapshot; None if nothing is published."""
    version = yield from current_version_plan(keys)
    if version is None:
        return None
    return (yield from snapshot_plan(keys, version, verifier))


def overlay_plan(
    keys: Keys, version: int, epoch: str, verifier: Verifier | None = None
) -> Plan[Overlay]:
    """The merged changes on top of snapshot ``version`` of dataset ``epoch``
    (one ``HGETALL``), verified like a change entry."""
    (fields,) = yield [("HGETALL", keys.overlay(version))]
    fields = cast(dict[bytes, bytes], fields or {})
    if not fields:
        return Overlay(0, None, EMPTY_OVERLAY)
    what = f"overlay of snapshot {version}"
    seq = parse_version(fields.get(b"seq"), f"{what}: seq")
    raw_id = fields.get(b"id")
    if seq is None or raw_id is None:
        raise SnapshotError(f"{what}: seq or id is missing")
    stream_id = raw_id.decode("ascii", "replace")
    if seq == 0:  # written by the flip itself: no data to forge
        return Overlay(0, stream_id, EMPTY_OVERLAY)
    arrays = decode_arrays(fields, what)
    found_epoch = field_text(fields, "epoch", what)
    if found_epoch != epoch:
        raise SnapshotError(f"{what}: epoch {found_epoch!r}, the snapshot's is {epoch!r}")
    verify_fields(fields, signed_body("overlay", version, seq, epoch, arrays), verifier, what)
    return Overlay(seq, stream_id, arrays)


class Decided(NamedTuple):
    """What the gateways decide from: a snapshot with its overlay merged in."""

    manifest: Manifest
    change_seq: int
    arrays: Arrays


def decided_plan(keys: Keys, verifier: Verifier | None = None) -> Plan[Decided | None]:
    """The current snapshot with every change published on top of it merged in
    (``contract.changes.merge_changes``); None if nothing is published.

    For tools that report on the data as a whole (``gateway.ops.cli
    sanctions``); a gateway keeps the overlay apart (``gateway.index``)."""
    snapshot = yield from current_snapshot_plan(keys, verifier)
    if snapshot is None:
        return None
    manifest = snapshot.manifest
    overlay = yield from overlay_plan(keys, manifest.version, manifest.epoch, verifier)
    if overlay.seq == 0:
        return Decided(snapshot.manifest, 0, snapshot.arrays)
    merged = merge_changes(snapshot.arrays, overlay.arrays)
    return Decided(snapshot.manifest, overlay.seq, merged)


def epoch_plan(keys: Keys) -> Plan[str | None]:
    """The dataset's epoch (``Keys.epoch``); None before the first publication."""
    (raw,) = yield [("GET", keys.epoch)]
    return _parse_epoch(raw, keys)


def _parse_epoch(raw: bytes | str | None, keys: Keys) -> str | None:
    if raw is None:
        return None
    text = _as_bytes(raw).decode("ascii", "replace")
    if not 0 < len(text) <= 64:
        raise SnapshotError(f"{keys.epoch} holds {text[:40]!r}, not an epoch")
    return text


def change_seq_plan(keys: Keys, version: int) -> Plan[int]:
    """How many changes have been published on top of snapshot ``version``."""
    (raw,) = yield [("HGET", keys.overlay(version), "seq")]
    return parse_version(raw, f"overlay of snapshot {version}: seq") or 0


class Place(NamedTuple):
    """Where Redis is, seen from a follower holding one snapshot (``place_plan``)."""

    current: int | None  # the current snapshot version (None: nothing published)
    seq: int  # changes published on top of the held snapshot
    epoch: str | None  # the dataset's epoch
    stream_id: str | None  # the change-stream entry the held snapshot's overlay reaches


def place_plan(keys: Keys, held_version: int) -> Plan[Place]:
    """Redis's current version, the change seq and stream position of
    ``held_version``'s overlay, and the epoch, in one round trip: is a follower
    holding ``held_version`` behind, ahead, or on another history?"""
    current, overlay, epoch = yield [
        ("GET", keys.current),
        ("HMGET", keys.overlay(held_version), "seq", "id"),
        ("GET", keys.epoch),
    ]
    seq, raw_id = overlay or (None, None)
    what = f"overlay of snapshot {held_version}: seq"
    return Place(
        parse_version(current, keys.current),
        parse_version(seq, what) or 0,
        _parse_epoch(epoch, keys),
        None if raw_id is None else _as_bytes(raw_id).decode("ascii", "replace"),
    )


def current_and_epoch_plan(keys: Keys) -> Plan[tuple[int | None, str | None]]:
    """The current version and the dataset's epoch, in one round trip."""
    current, epoch = yield [("GET", keys.current), ("GET", keys.epoch)]
    return parse_version(current, keys.current), _parse_epoch(epoch, keys)


def run(client: redis.Redis, plan: Plan[T]) -> T:
    """Run ``plan`` over a blocking client: one pipelined round trip per batch."""
    try:
        commands = next(plan)
        while True:
            pipe = client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)  # type: ignore[no-untyped-call]
            commands = plan.send(pipe.execute())
    except StopIteration as done:
        return cast(T, done.value)


async def run_async(client: aioredis.Redis, plan: Plan[T]) -> T:
    """Run ``plan`` over an asyncio client: one pipelined round trip per batch."""
    try:
        commands = next(plan)
        while True:
            pipe = client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            commands = plan.send(await pipe.execute())
    except StopIteration as done:
        return cast(T, done.value)


# Blocking shorthands for the loader, the ops tools and the tests.


def read_current_version(client: redis.Redis, keys: Keys) -> int | None:
    return run(client, current_version_plan(keys))


def read_manifest(client: redis.Redis, keys: Keys, version: int) -> Manifest | None:
    return run(client, manifest_plan(keys, version))


def read_snapshot(client: redis.Redis, keys: Keys, version: int | None = None) -> Snapshot | None:
    """Snapshot ``version`` (the current one by default); None if there is none."""
    if version is None:
        return run(client, current_snapshot_plan(keys))
    return run(client, snapshot_plan(keys, version))


def read_decided(client: redis.Redis, keys: Keys) -> Decided | None:
    return run(client, decided_plan(keys))


def read_overlay(client: redis.Redis, keys: Keys, version: int, epoch: str) -> Overlay:
    return run(client, overlay_plan(keys, version, epoch))


def read_epoch(client: redis.Redis, keys: Keys) -> str | None:
    return run(client, epoch_plan(keys))


def read_change_seq(client: redis.Redis, keys: Keys, version: int) -> int:
    return run(client, change_seq_plan(keys, version))


def _as_bytes(value: bytes | str) -> bytes:
    # redis-py's types allow text (decode_responses=True); chunks are binary,
    # so the clients used here never decode, but the types must say so.
    return value.encode() if isinstance(value, str) else value
