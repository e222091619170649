"""Atomic, versioned publication of snapshot arrays to Redis (``contract.snapshot``).

Steps, and why:

1. ``INCR seq`` gives this run a version no other run will ever get.
2. Every array's chunks, then the manifest, are written under that version
   with non-transactional pipelines in batches of a few chunks: a
   ``MULTI`` over hundreds of megabytes would block Redis for every gateway,
   and nobody reads a version before it is current, so atomicity comes from
   the flip, not from the writes. The manifest is written last, so a version
   whose manifest exists is complete.
3. The flip: one Lua script sets ``current`` to the new version only if it is
   greater than the current one and its manifest exists (versions
   only go up: a slow run that started first can never overwrite a newer
   snapshot; it gets ``StalePublishError``).
   The same step starts the new version's live changes: a marker on the
   change stream, the version's empty overlay hash, and a trim of the
   stream's older entries (see ``contract.snapshot``, ``loader.changes``).
4. Replication: when the primary has replicas online (``INFO replication``),
   ``WAIT 1 timeout`` is sent right after the flip, on the flip's own
   connection (one pipeline: ``WAIT`` counts the writes of the connection it
   is sent on, and a replica that has the flip has everything before it).
   Redis replicates asynchronously: a failover promotes a replica, and what
   no replica had is gone. The result says how many replicas acknowledged
   (``Replication``); the CLI fails a publication that is on the primary
   but on fewer replicas than asked (``--wait-replicas``), saying so.
5. After the flip, every other version below the new one except the one it
   replaced is unlinked (``SCAN`` on the prefix, ``UNLINK`` so Redis frees the
   big values in the background). The previous version is kept so that a
   gateway still reading it can finish; versions above the new one belong to
   runs still in progress and are left alone. This also clears the partial
   writes of runs that were killed.

If anything fails before the flip, the keys written for the new version are
deleted (best effort: if Redis itself is gone, the next run's step 5 does it)
and the error propagates: ``current`` is untouched. If the flip's reply is
lost (the connection broke, a failover during ``WAIT``), ``current`` is read
again: the version is published if it is current, and its keys are kept.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from contract.errors import SnapshotError, StalePublishError
from contract.reads import read_current_version, read_epoch
from contract.redis_target import online_replicas
from contract.signing import Signer
from contract.snapshot import (
    ARRAY_DTYPES,
    CHUNK_BYTES,
    Arrays,
    Keys,
    new_manifest,
    split_chunks,
    validate_arrays,
)

log = logging.getLogger(__name__)

# Bytes sent per pipeline round trip: a few chunks, so that a 1 GB snapshot
# streams without holding Redis' query buffer (1 GB by default) near its limit.
DEFAULT_BATCH_BYTES = 2 * CHUNK_BYTES
_SCAN_COUNT = 1000
_UNLINK_BATCH = 500

# KEYS[1] current, KEYS[2] the new version's manifest, KEYS[3] the change
# stream, KEYS[4] the new version's overlay hash, KEYS[5] the epoch; ARGV[1]
# the new version, ARGV[2] the version this run expects to replace (-1: any,
# 0: none), ARGV[3] the epoch its manifest was signed for. Returns {outcome,
# version current before}: 1 flipped, 0 refused (not newer), -1 refused
# (manifest missing), -2 refused (another run published since this one read
# the current version), -3 refused (the dataset's epoch changed: Redis lost
# or replaced its data while this run wrote).
#
# In the same atomic step as the flip: a ``kind=snapshot`` marker on the
# change stream (gateways following it reload at once), the new version's
# overlay hash with ``seq`` 0 and ``id`` = the marker (the position its
# changes start after), and the entries before the marker are trimmed: they
# are changes on top of older versions, which this one supersedes.
_FLIP_LUA = """
local new = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if new <= current then return {0, current} end
if redis.call('EXISTS', KEYS[2]) == 0 then return {-1, current} end
local expected = tonumber(ARGV[2])
if expected >= 0 and current ~= expected then return {-2, current} end
if redis.call('GET', KEYS[5]) ~= ARGV[3] then return {-3, current} end
redis.call('SET', KEYS[1], ARGV[1])
local id = redis.call('XADD', KEYS[3], '*', 'kind', 'snapshot', 'version', ARGV[1])
redis.call('XTRIM', KEYS[3], 'MINID', id)
redis.call('HSET', KEYS[4], 'seq', 0, 'id', id)
return {1, current}
"""

# ``expect_current``: replace whatever is current (``--replace``).
ANY_VERSION = -1
# How long a publication waits for its replicas to acknowledge it (WAIT).
DEFAULT_WAIT_TIMEOUT_MS = 2000


@dataclass(frozen=True)
class Replication:
    """What the replicas confirmed of a publication (``WAIT`` after its write)."""

    wanted: int  # acknowledgements asked for; 0: none (no WAIT sent)
    acked: int  # replicas that had the write within timeout_ms
    timeout_ms: int
    online: int | None  # replicas the primary had online; None: it would not say (ACL)

    @property
    def confirmed(self) -> bool:
        return self.acked >= self.wanted

    def shortfall(self, what: str) -> str:
        """Why ``what`` may not survive a failover, for the operator."""
        return (
            f"{what} is published on the primary, but only {self.acked} of the "
            f"{self.wanted} replica(s) asked for acknowledged it within {self.timeout_ms} ms: "
            "it may not survive a failover (Sentinel may promote a replica that lacks it, "
            "and gateways would then go back to what that replica holds). Check the replicas "
            "(INFO replication), then publish again or accept the risk"
        )


NO_REPLICATION = Replication(wanted=0, acked=0, timeout_ms=0, online=None)


@dataclass(frozen=True)
class PublishResult:
    """What a publication did: the new version, the one it replaced, the keys removed,
    and what the replicas confirmed."""

    version: int
    previous: int | None
    deleted_keys: int
    epoch: str = ""
    replication: Replication = NO_REPLICATION


def replicas_to_wait_for(client: redis.Redis, wait_replicas: int | None) -> tuple[int, int | None]:
    """(acknowledgements to wait for, replicas online): ``wait_replicas`` when
    given, else 1 when the primary has a replica online and 0 when it has none.
    A user without INFO (an ACL) cannot tell: 0, with a warning."""
    try:
        online: int | None = online_replicas(client.info("replication"))
    except redis.ResponseError as exc:
        online = None
        if wait_replicas is None:
            log.warning(
                "cannot tell whether the primary has replicas (INFO refused: %s): not waiting "
                "for any; give --wait-replicas N to wait for N",
                exc,
            )
    if wait_replicas is not None:
        return wait_replicas, online
    return (1 if online else 0), online


def eval_and_wait(
    client: redis.Redis, wanted: int, timeout_ms: int, script: str, *keys_and_args: Any
) -> tuple[Any, int]:
    """``EVAL script`` and, when ``wanted`` > 0, ``WAIT wanted timeout_ms`` right after
    it on the same connection (one pipeline); (the script's reply, replicas that
    acknowledged: 0 when no WAIT was sent)."""
    if wanted <= 0:
        return client.eval(script, *keys_and_args), 0
    pipe = client.pipeline(transaction=False)
    pipe.eval(script, *keys_and_args)
    pipe.execute_command("WAIT", wanted, timeout_ms)  # type: ignore[no-untyped-call]
    reply, acked = pipe.execute()
    return reply, int(acked)


def ensure_epoch(client: redis.Redis, keys: Keys) -> str:
    """The dataset's epoch, created (``SET NX``) if this Redis has none: the first
    publication, or Redis lost its data (a restart without persistence,
    ``FLUSHALL``, a failover that lost writes). Gateways take a new epoch's
    versions even when they are lower than the ones they hold."""
    client.set(keys.epoch, secrets.token_hex(16), nx=True)
    epoch = read_epoch(client, keys)
    if epoch is None:
        raise SnapshotError(f"{keys.epoch} vanished while it was being created")
    return epoch


def publish_snapshot(
    client: redis.Redis,
    keys: Keys,
    arrays: Arrays,
    meta: dict[str, Any] | None = None,
    *,
    expect_current: int | None = ANY_VERSION,
    signer: Signer | None = None,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    wait_replicas: int | None = None,
    wait_timeout_ms: int = DEFAULT_WAIT_TIMEOUT_MS,
) -> PublishResult:
    """Write ``arrays`` as a new version and make it current (see the module docstring).

    ``expect_current``: publish only on top of that version (None: only if
    nothing is published yet; ``ANY_VERSION``: on top of whatever is current).
    The manifest is signed by ``signer`` (unsigned when None). After the flip,
    wait up to ``wait_timeout_ms`` for ``wait_replicas`` replicas to have it
    (None: 1 when the primary has replicas online, else 0); the result's
    ``replication`` says how many did (fewer is not an exception: it is published).

    Raises ``SnapshotError`` for arrays that break the snapshot's invariants
    (before anything is written), ``StalePublishError`` if another version
    became current first, and Redis errors as they come; in every failure
    case ``current`` is unchanged and this version's keys are removed.
    """
    validate_arrays(arrays)
    epoch = ensure_epoch(client, keys)
    wanted, online = replicas_to_wait_for(client, wait_replicas)
    version = int(client.incr(keys.seq))
    manifest = new_manifest(version, arrays, meta or {}, epoch, signer)
    written: list[str] = []
    expected = 0 if expect_current is None else expect_current
    try:
        _write_chunks(client, keys, version, arrays, written, batch_bytes)
        written.append(keys.manifest(version))
        client.set(keys.manifest(version), manifest.to_json())
    except BaseException:
        _delete_quietly(client, written)
        raise
    try:
        outcome, current, acked = _flip(
            client, keys, version, expected, epoch, wanted, wait_timeout_ms
        )
    except BaseException as exc:
        # The script may have run with its reply lost (the connection broke, the
        # primary failed over during WAIT): then this version is current, wherever
        # the client reconnects, and its keys must stay.
        if not isinstance(exc, redis.RedisError) or not _is_current(client, keys, version):
            _delete_quietly(client, written)
            raise
        log.warning("the flip's reply was lost, but version %s is current: published", version)
        replication = Replication(wanted, 0, wait_timeout_ms if wanted else 0, online)
        # The version it replaced is unknown: collected by the next publication.
        return PublishResult(version, None, 0, epoch, replication)
    if outcome != 1:
        _delete_quietly(client, written)
        if outcome in (0, -2):
            raise StalePublishError(version, current, expected)
        if outcome == -3:
            raise SnapshotError(
                f"snapshot version {version} not published: the dataset's epoch changed while "
                "it was written (Redis lost or replaced its data): run the load again"
            )
        raise SnapshotError(f"snapshot version {version}: manifest vanished before the flip")
    previous = current or None
    replication = Replication(wanted, acked, wait_timeout_ms if wanted else 0, online)
    if not replication.confirmed:
        log.warning(replication.shortfall(f"snapshot version {version}"))
    deleted = collect_garbage(client, keys, version, previous)
    return PublishResult(
        version=version,
        previous=previous,
        deleted_keys=deleted,
        epoch=epoch,
        replication=replication,
    )


def _write_chunks(
    client: redis.Redis,
    keys: Keys,
    version: int,
    arrays: Arrays,
    written: list[str],
    batch_bytes: int,
) -> None:
    pipe = client.pipeline(transaction=False)
    queued = 0
    for name in ARRAY_DTYPES:
        for index, chunk in enumerate(split_chunks(arrays[name])):
            key = keys.chunk(version, name, index)
            written.append(key)  # before sending: a failed batch may be half applied
            pipe.set(key, chunk)  # a memoryview: sent without a copy
            queued += len(chunk)
            if queued >= batch_bytes:
                pipe.execute()
                queued = 0
    pipe.execute()


def _flip(
    client: redis.Redis,
    keys: Keys,
    version: int,
    expected: int,
    epoch: str,
    wait_replicas: int = 0,
    wait_timeout_ms: int = DEFAULT_WAIT_TIMEOUT_MS,
) -> tuple[int, int, int]:
    """Run the flip script, then ``WAIT`` for ``wait_replicas`` (when > 0); return
    (outcome, the version that was current before, replicas that acknowledged)."""
    (outcome, current), acked = eval_and_wait(
        client,
        wait_replicas,
        wait_timeout_ms,
        _FLIP_LUA,
        5,
        keys.current,
        keys.manifest(version),
        keys.changes,
        keys.overlay(version),
        keys.epoch,
        version,
        expected,
        epoch,
    )
    return int(outcome), int(current), acked


def collect_garbage(client: redis.Redis, keys: Keys, current: int, previous: int | None) -> int:
    """Unlink every snapshot version below ``current`` except ``previous``; return keys removed.

    Failures are logged, not raised: the publication they follow has happened.
    """
    try:
        doomed = [
            key
            for key in client.scan_iter(match=keys.snapshot_pattern, count=_SCAN_COUNT)
            if _is_garbage(keys.version_of(_text(key)), current, previous)
        ]
        return _unlink(client, doomed)
    except redis.RedisError as exc:
        log.warning("snapshot garbage collection failed (next publication retries): %s", exc)
        return 0


def _text(key: bytes | str) -> str:
    return key.decode() if isinstance(key, bytes) else key


def _is_garbage(version: int | None, current: int, previous: int | None) -> bool:
    return version is not None and version < current and version != previous


def _unlink(client: redis.Redis, doomed: Iterable[bytes | str]) -> int:
    batch = list(doomed)
    removed = 0
    for i in range(0, len(batch), _UNLINK_BATCH):
        removed += int(client.unlink(*batch[i : i + _UNLINK_BATCH]))
    return removed


def _is_current(client: redis.Redis, keys: Keys, version: int) -> bool:
    """Whether ``version`` is current (False when Redis cannot say)."""
    try:
        return read_current_version(client, keys) == version
    except (redis.RedisError, SnapshotError):
        return False


def _delete_quietly(client: redis.Redis, written: list[str]) -> None:
    """Best-effort removal of a failed version's keys; Redis may be the thing that failed."""
    if not written:
        return
    try:
        _unlink(client, written)
    except redis.RedisError as exc:
        log.warning("could not remove a failed snapshot's keys (next publication will): %s", exc)
