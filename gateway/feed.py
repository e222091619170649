"""Loads published snapshots from Redis into the index and follows the change
stream, so that every change reaches the decisions within milliseconds.

Loading: a snapshot is read as a few large values (one per array chunk) in one
pipeline and wrapped zero-copy in numpy arrays; then the overlay hash of that
version (the changes already published on top of it, merged, with the stream
position they reach) is read in one ``HGETALL``. The new ``LayeredIndex``
replaces the old one with a single assignment (``IndexHolder.swap``).

Following: ``XREAD BLOCK`` on ``{prefix}:changes`` from that position. Each
entry is a snapshot marker (``kind=snapshot``: a newer version is current:
load it) or a change (``kind=change, base, seq``). A change on top of the
held snapshot with the next sequence number is merged into the overlay
(``LayeredIndex.with_change``: the snapshot arrays are not touched) and
swapped in; one already included is skipped; one with a later sequence
means entries were trimmed away under us: the follower has lost its place
and reloads (snapshot + overlay hash), which includes every change. So no
change is skipped or applied twice, and ``index_version`` only goes up.

When a block times out (``poll_interval_s``) the follower also compares
``current`` and the overlay's ``seq`` with what it holds: a marker or change
it did not see (trimmed, or published while it was reconnecting) triggers the
same reload.

Trust: with a ``verifier`` (the loader's public keys, ``contract.signing``)
a snapshot is swapped in only if its manifest is signed by a trusted key and
every array matches the manifest's digest and the index's invariants; a
change entry or overlay only if its signature covers it. A bad snapshot is
remembered by its manifest and not downloaded again; a bad entry is skipped,
logged and counted (``rejected``) and the stream followed on.

Epochs: every publication belongs to a dataset epoch (``Keys.epoch``). Inside
one epoch versions only go up; a snapshot of another epoch (Redis lost its
data and was loaded again) is taken even with a lower version, loudly.

Failovers (Redis Sentinel promoting a replica; ``contract.redis_target``):
replication is asynchronous, so the new primary may lack the last writes the
gateway already took in from the old one: change entries (then the sequence
numbers restart below what the gateway holds), a snapshot's flip (its
version is reused by the next load: the sequence counter went back too).
Inside one history the stream after the held index's entry can hold only
newer changes of the held snapshot and newer snapshots; so an entry that
cannot be there (a marker of the held version or an older one, a change
numbered at or below the held one or on an older snapshot), or an overlay
whose entry differs from the held one at the same sequence number, means
Redis's history forked from the gateway's, and the follower *converges*: it
reloads what Redis holds now, re-reading the snapshot unless its manifest is
the held one's, even when that takes ``index_version`` down. A Redis that is
merely behind the held index (a lagging replica, or a failover that lost
writes and nothing published since) is waited for ``behind_grace_s`` (and
for as long as the node read is a replica cut off from its primary or in
its first sync), then converged on too. Going back is never silent: a warning with both versions,
``rollbacks`` in the health details. A reload that reuses the held
snapshot's arrays checks first that Redis's manifest of that version is the
held one (a version number reused after a failover is another snapshot).

The follower cannot die: every failure (any exception type) is logged once
per distinct cause, counted (``errors`` by cause: redis, data, bug), and
retried with exponential backoff; ``follower_up`` and ``last_error`` say
how it is doing, for health details and metrics. Until the first index is
held, ``waiting_cause`` says why there is none (for the start-up log):
Redis unreachable, nothing published under the prefix (and which prefixes do
hold snapshots), or the current snapshot unusable.

Change-feed lag (``change_lag_seconds``) is publication to enforcement of the
last change, reported for ``CHANGE_LAG_WINDOW_S`` after it was enforced and 0
afterwards. A change taken in by a reload (missed on the stream: trimmed, or
published while reconnecting) counts in ``changes_applied`` too, its lag
measured from the time Redis added it to the stream (its entry id).

Fail-static: on any Redis error the gateway keeps deciding from the index it
holds, logs that the data is stale and since when (``stale_since``), and
reconnects with exponential backoff; on success it catches up from its stream
position. With ``cache`` (``--snapshot-cache-dir``) every loaded snapshot and
its overlay are saved to disk, and a gateway that starts while Redis is down
starts from them (``source == "disk-cache"``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import difflib
import functools
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from contract import reads
from contract.changes import ChangeEntry, SnapshotMarker, decode_entry
from contract.errors import SnapshotError
from contract.redis_target import masked_url as masked_url  # re-exported (gateway.server)
from contract.signing import Verifier
from contract.snapshot import Keys, Manifest
from gateway.index import Index, IndexHolder, LayeredIndex, StatusIndex
from gateway.ops.disk_cache import SnapshotCache
from gateway.ops.shared_index import SharedSnapshots

log = logging.getLogger(__name__)

# Entries read per XREAD: a burst of changes is merged and swapped in once.
_READ_COUNT = 500
# Backoff after a data error (a bad snapshot, a reload that keeps failing):
# long enough not to hammer Redis, short enough to catch a repaired publication.
_MAX_DATA_BACKOFF_S = 30.0
# Bad manifests remembered, so that a bad snapshot is not downloaded again.
_BAD_MANIFESTS_KEPT = 16
# The lag of the last change is reported this long after it was enforced, then
# 0: a change 3 s late an hour ago says nothing about the feed now, and the
# EligibilityChangeFeedLagging alert (lag > 1 s for 5 min) must not fire for
# ever when changes are rare. Longer than a scrape interval, shorter than the
# alert's 5 minutes: only lag that keeps coming back fires it.
CHANGE_LAG_WINDOW_S = 60.0
# How long Redis may be behind the held index (a lagging replica; a failover
# that lost writes, nothing published since) before the follower takes what
# Redis holds: a replica catches up in milliseconds, a lost write never comes.
BEHIND_GRACE_S = 10.0
# Looking for other prefixes that hold snapshots (a wrong --prefix): at most
# this many SCAN calls of 1000 keys, at most once per interval, while waiting.
_PREFIX_SCAN_CALLS = 100
_PREFIX_SCAN_EVERY_S = 30.0


async def load_snapshot(
    client: aioredis.Redis,
    keys: Keys,
    version: int,
    shared: SharedSnapshots | None = None,
    verifier: Verifier | None = None,
) -> StatusIndex:
    """Read snapshot ``version`` from Redis, verified, and build its index (its
    arrays mapped from ``shared``'s file when the gateway runs several workers)."""
    snapshot = await reads.run_async(client, reads.snapshot_plan(keys, version, verifier))
    if snapshot is None:
        raise SnapshotError(f"snapshot {version} has no manifest under {keys.manifest(version)}")
    arrays = snapshot.arrays
    if shared is not None:
        arrays = shared.share(arrays, version)
    # created_at (publication time) rides in meta: metrics report the
    # snapshot's age from publication, not from when this gateway loaded it.
    manifest = snapshot.manifest
    meta = {
        **manifest.meta,
        "created_at": manifest.created_at,
        "epoch": manifest.epoch,
        "publication": publication_id(manifest),
    }
    index = StatusIndex(arrays, version, meta, validated=True)
    if shared is not None:  # the claim path's packed table: built once, for every worker
        index.share_packed = functools.partial(shared.share_table, version)
    return index


def publication_id(manifest: Manifest) -> str:
    """What tells one publication of a version from another (its epoch and the
    digest of every array): a version number reused after a failover is not
    the snapshot held under that number."""
    return hashlib.sha256(repr(_manifest_id(manifest)).encode()).hexdigest()[:32]


async def load_overlay(
    client: aioredis.Redis, keys: Keys, base: StatusIndex, verifier: Verifier | None = None
) -> LayeredIndex:
    """``base`` with the changes published on top of it so far (one ``HGETALL``).

    A snapshot published before live changes existed has no overlay hash: it
    is followed from the start of the stream (its changes carry its version).
    """
    epoch = str(base.meta.get("epoch", ""))
    plan = reads.overlay_plan(keys, base.version, epoch, verifier)
    overlay = await reads.run_async(client, plan)
    return LayeredIndex(base, overlay.arrays, overlay.seq, overlay.stream_id or "0-0")


class Waiting(NamedTuple):
    """Why the follower holds no index yet: ``cause`` is one of "starting",
    "redis-unreachable", "nothing-published", "snapshot-unusable", "loading";
    ``detail`` says it in words, with what was seen."""

    cause: str
    detail: str


def _stream_id_ms(stream_id: str) -> int:
    """The milliseconds part of a stream entry id ("1712345678901-0"): when
    Redis added the entry; 0 for "0-0" or anything else."""
    head = stream_id.partition("-")[0]
    return int(head) if head.isdigit() else 0


def _stream_id_key(stream_id: str) -> tuple[int, int]:
    """A stream entry id as a pair to compare ("1712345678901-3" -> (1712345678901, 3))."""
    ms, _, seq = stream_id.partition("-")
    return (int(ms) if ms.isdigit() else 0, int(seq) if seq.isdigit() else 0)


Entries = list[tuple[bytes, dict[bytes, bytes]]]


def _entries(reply: Any) -> Entries:
    """The entries of an XREAD reply on one stream (RESP2: [[name, entries]])."""
    return cast(Entries, reply[0][1]) if reply else []


def _raise_if_cancelling() -> None:
    """Re-raise a cancellation that a Redis client call swallowed.

    A cancelled redis-py call can surface as a ``ConnectionError`` (or return)
    instead of ``CancelledError``; the loops here catch Redis errors to stay
    fail-static, so without this check ``Gateway.stop()`` could wait forever.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class _Reload(Exception):
    """The follower must reload: a newer snapshot, or it lost its place in the stream;
    ``converge``: take what Redis holds even if it is older (a failover lost writes)."""

    def __init__(self, reason: str, *, converge: bool = False) -> None:
        super().__init__(reason)
        self.converge = converge


def _cause(exc: BaseException) -> str:
    """The error counter's label: Redis unreachable, bad data, or a bug of ours."""
    if isinstance(exc, RedisError | OSError):
        return "redis"
    if isinstance(exc, SnapshotError):
        return "data"
    return "bug"


def _manifest_id(manifest: Manifest) -> tuple[int, str, str]:
    """What identifies one publication of a version (a bad one is not read twice)."""
    return (manifest.version, manifest.epoch, str(sorted(manifest.digests.items())))


class SnapshotFollower:
    """Keeps ``holder`` on the newest snapshot plus every change published on top of it.

    Attributes for health details and metrics (read-only for others, see
    ``gateway.ops.metrics.FollowerState``): ``redis_ok``, ``stale_since``
    (Unix time Redis became unreachable, None while reachable), ``source``
    ("none", "redis" or "disk-cache": where the held index came from),
    ``disk_cache_saved_at``, ``changes_applied`` (from the stream and taken
    in by reloads), ``reloads``, ``lost_place`` (reloads because entries were
    trimmed away), ``change_lag_seconds`` (publication to enforcement of the
    last change, for ``CHANGE_LAG_WINDOW_S``), ``follower_up`` (the last
    attempt to follow succeeded), ``last_error`` and ``last_error_cause``
    (redis, data or bug), ``last_success`` (Unix time), ``errors`` (by
    cause), ``rejected`` (data refused, by what), ``epoch_changes``,
    ``rollbacks`` (times the follower replaced the index it held by what
    Redis holds although that did not follow from it: a failover lost
    writes; module docstring, "Failovers").
    """

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        holder: IndexHolder,
        *,
        poll_interval_s: float = 1.0,
        # Reconnect at least once a second: a fleet doing so costs Redis nothing,
        # while a 5 s cap delayed the catch-up after an outage by up to 4.5 s
        # (bench.fault_injection).
        max_backoff_s: float = 1.0,
        on_swap: Callable[[Index], Awaitable[None]] | None = None,
        cache: SnapshotCache | None = None,
        shared: SharedSnapshots | None = None,
        verifier: Verifier | None = None,
        max_data_age_s: float | None = None,
        behind_grace_s: float = BEHIND_GRACE_S,
    ) -> None:
        self.client = client
        self.shared = shared
        self.keys = keys
        self.holder = holder
        self.poll_interval_s = poll_interval_s
        self.max_backoff_s = max_backoff_s
        self.on_swap = on_swap
        self.cache = cache
        self.verifier = verifier
        self.max_data_age_s = max_data_age_s
        self.behind_grace_s = behind_grace_s
        self.redis_ok = False
        self.stale_since: float | None = None
        self.source = "none"
        self.disk_cache_saved_at: str | None = None
        self.changes_applied = 0
        self.reloads = 0
        self.lost_place = 0
        self.epoch_changes = 0
        self.rollbacks = 0
        # The last change enforced: its lag and when (Unix time); see change_lag_seconds.
        self.last_change_lag_s: float | None = None
        self.last_change_at: float | None = None
        self.follower_up = False
        self.last_error: str | None = None
        self.last_error_cause: str | None = None
        self.loading_version: int | None = None  # a snapshot being read now
        self.last_success: float | None = None
        self.errors: dict[str, int] = {"redis": 0, "data": 0, "bug": 0}
        self.rejected: dict[str, int] = {"snapshot": 0, "change": 0, "overlay": 0}
        self._position = "0-0"
        # Set when the next reload must take what Redis holds, older or not (why).
        self._converge: str | None = None
        # Since when (monotonic) Redis has been behind the held index, and whether
        # the replica read was found syncing meanwhile (said once).
        self._behind_since: float | None = None
        self._behind_syncing = False
        # Refused publications, with why (said again when one is met again).
        self._bad_manifests: dict[tuple[int, str, str], str] = {}
        self._refused_manifests: set[str] = set()
        self._last_reload = 0.0
        self._logged_error: str | None = None
        self._cache_task: asyncio.Task[None] | None = None
        self._cache_dirty = False
        self._tasks: set[asyncio.Future[None]] = set()
        self._other_prefixes: list[str] = []
        self._prefixes_scanned_at: float | None = None

    @property
    def change_lag_seconds(self) -> float | None:
        """Publication to enforcement of the last change, while it was enforced
        less than ``CHANGE_LAG_WINDOW_S`` ago; 0.0 after that (nothing late
        now); None before the first change."""
        if self.last_change_lag_s is None or self.last_change_at is None:
            return None
        if time.time() - self.last_change_at > CHANGE_LAG_WINDOW_S:
            return 0.0
        return self.last_change_lag_s

    @property
    def held(self) -> LayeredIndex | None:
        index = self.holder.current
        return index if isinstance(index, LayeredIndex) else None

    @property
    def held_epoch(self) -> str | None:
        held = self.held
        return None if held is None else str(held.meta.get("epoch", ""))

    @property
    def data_too_old(self) -> bool:
        """Nothing confirmed with Redis for longer than ``max_data_age_s``."""
        if self.max_data_age_s is None or self.held is None:
            return False
        confirmed = self.last_success
        return confirmed is None or time.time() - confirmed > self.max_data_age_s

    def health_details(self) -> dict[str, Any]:
        """The facts for health details and logs: versions, staleness, where the data came from."""
        held = self.held
        return {
            "snapshot_version": held.snapshot_version if held else 0,
            "change_seq": held.change_seq if held else 0,
            "index_version": self.holder.version,
            "epoch": self.held_epoch,
            "source": self.source,
            "redis_ok": self.redis_ok,
            "stale": not self.redis_ok,
            "stale_since": self.stale_since,
            "follower_up": self.follower_up,
            "last_error": self.last_error,
            "data_too_old": self.data_too_old,
            "disk_cache_saved_at": self.disk_cache_saved_at,
            "changes_applied": self.changes_applied,
            "reloads": self.reloads,
            "lost_place": self.lost_place,
            "rollbacks": self.rollbacks,
            "rejected": dict(self.rejected),
        }

    async def refresh(self, converge: bool = False) -> bool:
        """Load the current snapshot and its overlay if it is to replace what is held:
        newer in the same epoch, or of another epoch (Redis lost or replaced its data);
        with ``converge``, whatever Redis holds now, older or not (module docstring,
        "Failovers")."""
        version, epoch = await reads.run_async(self.client, reads.current_and_epoch_plan(self.keys))
        held = self.held
        if version is None:
            return False
        new_epoch = held is not None and epoch != self.held_epoch
        if held is not None and not new_epoch and version < held.snapshot_version and not converge:
            self._note_once(
                f"redis has snapshot {version}, older than the held "
                f"{held.snapshot_version} in the same epoch; keeping the held one "
                f"(for {self.behind_grace_s:g} s, then taking what Redis holds)",
                level=logging.WARNING,
            )
            return False
        started = time.perf_counter()
        same = None
        if held is not None and not new_epoch and held.snapshot_version == version:
            same = await self._same_publication(held.base, version)
        if same:
            assert held is not None
            base = held.base  # the same snapshot: only the overlay is re-read
        else:
            if same is False and not converge:
                # The held version's number was reused after a failover lost its flip.
                converge = True
                self._converge = f"snapshot {version} in Redis is not the held publication"
            self.loading_version = version
            try:
                base = await self._load_verified(version)
            finally:
                self.loading_version = None
        index = await load_overlay(self.client, self.keys, base, self.verifier)
        if new_epoch:
            assert held is not None
            self.epoch_changes += 1
            log.warning(
                "the dataset's epoch changed (Redis lost or replaced its data): taking its "
                "current snapshot although its version may be lower",
                extra={
                    "held_epoch": self.held_epoch,
                    "epoch": epoch,
                    "held_index_version": held.version,
                    "index_version": index.version,
                },
            )
        rollback = (
            converge
            and held is not None
            and not new_epoch
            and (
                index.version != held.version
                or index.base is not held.base
                or index.stream_id != held.stream_id
            )
        )
        if rollback:
            assert held is not None
            self.rollbacks += 1
            log.warning(
                "taking what Redis holds now instead of the held index (a failover lost "
                "writes the gateway had taken in; they must be published again)",
                extra={
                    "reason": self._converge,
                    "held_index_version": held.version,
                    "index_version": index.version,
                    "held_stream_id": held.stream_id,
                    "stream_id": index.stream_id,
                    "went_back": index.version < held.version,
                },
            )
        installed = await self._install(index, force=new_epoch or rollback)
        self._behind_since = None
        if installed or (held is not None and held.version == index.version):
            # Redis confirms what is held: follow from the stream position it gives.
            self._position = index.stream_id
            self.source = "redis"
            self.disk_cache_saved_at = None
            self._save_to_cache_later()
        if not installed:
            return False
        if held is not None:
            self._count_reloaded_changes(held, index)
        log.info(
            "index loaded",
            extra={
                "index_version": index.version,
                "snapshot_version": version,
                "change_seq": index.change_seq,
                "epoch": epoch,
                "practitioners": len(index),
                "index_bytes": index.nbytes,
                "load_s": round(time.perf_counter() - started, 3),
            },
        )
        return True

    def _count_reloaded_changes(self, held: LayeredIndex, index: LayeredIndex) -> None:
        """Count the changes a reload took in that the stream did not bring
        (trimmed, or published while reconnecting), and take the lag of the
        newest from when Redis added it to the stream (its entry id)."""
        same_snapshot = held.snapshot_version == index.snapshot_version and held.meta.get(
            "epoch"
        ) == index.meta.get("epoch")
        taken = index.change_seq - held.change_seq if same_snapshot else index.change_seq
        if taken <= 0:
            return
        self.changes_applied += taken
        added_ms = _stream_id_ms(index.stream_id)
        if added_ms:
            self._note_change_lag(max(time.time() - added_ms / 1000, 0.0))

    def _note_change_lag(self, lag_s: float) -> None:
        self.last_change_lag_s = lag_s
        self.last_change_at = time.time()

    async def waiting_cause(self) -> Waiting:
        """Why no index is held yet, from what the follower last saw (and, when
        nothing is published under the prefix, a bounded SCAN for the prefixes
        that do hold snapshots, at most every ``_PREFIX_SCAN_EVERY_S``)."""
        if self.loading_version is not None:
            return Waiting("loading", f"reading snapshot {self.loading_version}")
        if not self.follower_up:
            if self.last_error is None:
                return Waiting("starting", "no answer from Redis yet")
            if self.last_error_cause == "redis":
                return Waiting("redis-unreachable", f"Redis unreachable: {self.last_error}")
            return Waiting(
                "snapshot-unusable", f"the current snapshot is unusable: {self.last_error}"
            )
        detail = f"nothing published under the prefix ({self.keys.current} is not set)"
        others = await self._prefixes_with_snapshots()
        if others:
            shown = ", ".join(repr(p) for p in others[:5])
            more = f" and {len(others) - 5} more" if len(others) > 5 else ""
            detail += f"; prefixes that hold snapshots: {shown}{more}"
        return Waiting("nothing-published", detail)

    async def _prefixes_with_snapshots(self) -> list[str]:
        """Other prefixes with a ``{prefix}:snapshot:current`` key, the most like
        ours first (a mistyped --prefix); cached, and [] if the SCAN fails."""
        now = time.monotonic()
        if (
            self._prefixes_scanned_at is not None
            and now - self._prefixes_scanned_at < _PREFIX_SCAN_EVERY_S
        ):
            return self._other_prefixes
        self._prefixes_scanned_at = now
        suffix = ":snapshot:current"
        found: set[str] = set()
        cursor = 0
        try:
            for _ in range(_PREFIX_SCAN_CALLS):
                cursor, batch = await asyncio.wait_for(
                    self.client.scan(cursor, match=f"*{suffix}", count=1000), 2.0
                )
                for key in batch:
                    text = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
                    found.add(text.removesuffix(suffix))
                if not cursor:
                    break
        except (RedisError, OSError, TimeoutError):
            return self._other_prefixes
        found.discard(self.keys.prefix)
        ours = self.keys.prefix

        def likeness(prefix: str) -> tuple[float, str]:
            return (-difflib.SequenceMatcher(None, ours, prefix).ratio(), prefix)

        self._other_prefixes = sorted(found, key=likeness)
        return self._other_prefixes

    async def _same_publication(self, base: StatusIndex, version: int) -> bool | None:
        """Whether Redis's snapshot ``version`` is the publication ``base`` holds (one
        small GET of the manifest): after a failover a version number can be reused.
        None when it cannot tell (an index from an older disk cache; no manifest):
        the snapshot is then read again."""
        known = base.meta.get("publication")
        if not known:
            return None
        plan = reads.manifest_plan(self.keys, version, self.verifier)
        manifest = await reads.run_async(self.client, plan)
        return None if manifest is None else publication_id(manifest) == known

    async def _load_verified(self, version: int) -> StatusIndex:
        """Snapshot ``version``, verified; a bad one is remembered by its manifest and
        not downloaded again. With nothing held yet, fall back to the newest older
        version still kept that verifies (a new gateway must be able to start)."""
        try:
            return await self._load_one(version)
        except SnapshotError as exc:
            if self.held is not None:
                raise
            for older in await self._kept_versions(below=version):
                try:
                    base = await self._load_one(older)
                except SnapshotError as older_exc:
                    log.warning(
                        "an older snapshot is unusable too",
                        extra={"snapshot_version": older, "error": str(older_exc)[:300]},
                    )
                    continue
                log.warning(
                    "the current snapshot is unusable: starting from the newest older one "
                    "that verifies (stale until a good one is published)",
                    extra={"current": version, "snapshot_version": older, "error": str(exc)},
                )
                return base
            raise

    async def _load_one(self, version: int) -> StatusIndex:
        plan = reads.manifest_plan(self.keys, version, self.verifier)
        try:
            manifest = await reads.run_async(self.client, plan)
        except SnapshotError as exc:
            if str(exc) not in self._refused_manifests:  # each refusal counted once
                self._refused_manifests = {*list(self._refused_manifests)[-15:], str(exc)}
                self.rejected["snapshot"] += 1
            raise
        if manifest is None:
            raise SnapshotError(f"snapshot {version} has no manifest (its keys are gone)")
        ident = _manifest_id(manifest)
        if ident in self._bad_manifests:
            raise SnapshotError(
                f"snapshot {version} was refused before ({self._bad_manifests[ident]}); "
                "not downloading it again"
            )
        try:
            return await load_snapshot(self.client, self.keys, version, self.shared, self.verifier)
        except SnapshotError as exc:
            self.rejected["snapshot"] += 1
            if len(self._bad_manifests) >= _BAD_MANIFESTS_KEPT:
                del self._bad_manifests[next(iter(self._bad_manifests))]  # the oldest
            self._bad_manifests[ident] = str(exc)[:300]
            raise

    async def _kept_versions(self, below: int) -> list[int]:
        """Versions below ``below`` whose manifest is still in Redis, newest first."""
        found: set[int] = set()
        async for key in self.client.scan_iter(
            match=f"{self.keys.prefix}:snapshot:*:manifest", count=1000
        ):
            text = key.decode() if isinstance(key, bytes) else str(key)
            version = self.keys.version_of(text)
            if version is not None and version < below:
                found.add(version)
        return sorted(found, reverse=True)

    async def run(self) -> None:
        """Follow snapshots and changes until cancelled. Never raises anything but
        ``CancelledError``: every failure is logged once per cause, counted and
        retried with backoff (fail-static meanwhile)."""
        backoff = 0.05
        reload_backoff = 0.0
        while True:
            _raise_if_cancelling()
            try:
                if reload_backoff:
                    await asyncio.sleep(reload_backoff)  # reloads in a row back off too
                await self.refresh(converge=self._converge is not None)
                self._converge = None
                self._mark_ok()
                backoff = 0.05
                if self.held is None:  # nothing published yet: wake on the first flip's marker
                    await self.client.xread(
                        {self.keys.changes: "$"}, block=max(int(self.poll_interval_s * 1000), 1)
                    )
                    continue
                await self.follow()
            except asyncio.CancelledError:
                raise
            except _Reload as reason:
                self.reloads += 1
                if reason.converge:
                    self._converge = str(reason)
                now = time.monotonic()
                # A reload within a second of the last one (a gap that keeps
                # coming back, junk at the next sequence number): back off.
                if now - self._last_reload < 1.0:
                    reload_backoff = min(max(reload_backoff * 2, 0.05), self.max_backoff_s)
                    self._note_once(
                        "reloading repeatedly",
                        level=logging.WARNING,
                        exc=SnapshotError(str(reason)),
                    )
                else:
                    reload_backoff = 0.0
                    log.info("reloading", extra={"reason": str(reason)})
                self._last_reload = now
            except Exception as exc:
                cause = _cause(exc)
                self.errors[cause] += 1
                self.follower_up = False
                self.last_error = f"{type(exc).__name__}: {str(exc)[:300]}"
                self.last_error_cause = cause
                if cause == "redis":
                    self._mark_stale(exc)
                    if self.holder.current is None:
                        self._start_from_disk_cache()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.max_backoff_s)
                else:
                    self._note_once(
                        "following Redis failed; deciding from the held index meanwhile"
                        if self.holder.current is not None
                        else "following Redis failed; no index held yet (NOT_SERVING)",
                        level=logging.ERROR,
                        exc=exc,
                    )
                    if self.holder.current is None:
                        self._start_from_disk_cache()
                    await asyncio.sleep(backoff)
                    backoff = min(max(backoff * 2, 0.5), _MAX_DATA_BACKOFF_S)

    async def follow(self) -> None:
        """Apply the stream's entries as they come; return or raise ``_Reload`` to reload."""
        block_ms = max(int(self.poll_interval_s * 1000), 1)
        while True:
            _raise_if_cancelling()
            entries = _entries(
                await self.client.xread(
                    {self.keys.changes: self._position}, count=_READ_COUNT, block=block_ms
                )
            )
            if entries:
                self._apply(entries)
            else:
                await self._check_place()
            self._mark_ok()

    def _apply(self, entries: Entries) -> None:
        held = self.held
        assert held is not None
        index = held
        lag: float | None = None
        epoch = self.held_epoch
        for entry_id, fields in entries:
            # The held index is exactly a stream entry (not the "0-0" of a snapshot
            # published before live changes): what may follow it is known.
            placed = index.stream_id != "0-0"
            what = f"change-stream entry {entry_id.decode('ascii', 'replace')}"
            try:
                entry = decode_entry(fields, what, self.verifier)
            except SnapshotError as exc:
                # Not ours (junk, a forgery, another epoch's): skip it, say so,
                # and follow on: the real change with this number may follow.
                self.rejected["change"] += 1
                log.error("change-stream entry refused", extra={"error": str(exc)[:300]})
                self._position = entry_id.decode()
                continue
            if isinstance(entry, SnapshotMarker):
                if entry.version > index.snapshot_version or (
                    not placed and entry.version != index.snapshot_version
                ):
                    self._swap_now(index)
                    raise _Reload(f"snapshot {entry.version} published")
                if placed:
                    self._swap_now(index)
                    raise _Reload(
                        f"the stream's history forked (a failover lost writes): snapshot "
                        f"{entry.version}'s marker follows the held snapshot "
                        f"{index.snapshot_version}'s entry {index.stream_id}",
                        converge=True,
                    )
            elif isinstance(entry, ChangeEntry):
                if entry.epoch != epoch:
                    if entry.base >= index.snapshot_version:
                        self._swap_now(index)
                        raise _Reload(f"a change of another dataset epoch ({entry.epoch})")
                elif entry.base > index.snapshot_version:
                    self._swap_now(index)
                    raise _Reload(
                        f"a change on top of snapshot {entry.base}, newer than the held one"
                    )
                elif entry.base == index.snapshot_version and entry.seq > index.change_seq:
                    if entry.seq != index.change_seq + 1:
                        self.lost_place += 1
                        self._swap_now(index)
                        raise _Reload(
                            f"lost place in the change stream: change {entry.seq} follows "
                            f"{index.change_seq} (entries were trimmed)"
                        )
                    index = index.with_change(entry.arrays, entry.seq, entry_id.decode())
                    self.changes_applied += 1
                    if entry.published_at_ns:
                        lag = max(time.time_ns() - entry.published_at_ns, 0) / 1e9
                elif placed:
                    self._swap_now(index)
                    raise _Reload(
                        f"the stream's history forked (a failover lost writes): change "
                        f"{entry.seq} on snapshot {entry.base} follows the held change "
                        f"{index.change_seq} on snapshot {index.snapshot_version} "
                        f"(entry {index.stream_id})",
                        converge=True,
                    )
            self._position = entry_id.decode()
        self._swap_now(index)
        if lag is not None:
            self._note_change_lag(lag)

    def _swap_now(self, index: LayeredIndex) -> None:
        """Install changes merged so far (synchronously: the decision path never waits)."""
        if self.holder.swap(index):
            if self.on_swap is not None:
                self._background(self.on_swap(index))
            self._save_to_cache_later()

    async def _check_place(self) -> None:
        """On an idle stream: is there a snapshot or change the stream did not show us?"""
        held = self.held
        assert held is not None
        place = await reads.run_async(
            self.client, reads.place_plan(self.keys, held.snapshot_version)
        )
        current, seq, epoch = place.current, place.seq, place.epoch
        if current is not None and (current > held.snapshot_version or epoch != self.held_epoch):
            raise _Reload(f"snapshot {current} (epoch {epoch}) is current")
        if current is None:
            return  # nothing published (an empty Redis): keep deciding from the held index
        if current < held.snapshot_version:
            await self._behind(f"Redis has snapshot {current}, older than the held {held.version}")
        elif seq < held.change_seq or (seq == held.change_seq and place.stream_id is not None):
            await self._check_overlay(held, seq, place.stream_id)
        else:
            self._behind_since = None
        if seq > held.change_seq:
            # Published just now, or trimmed away: a non-blocking read tells.
            entries = _entries(
                await self.client.xread({self.keys.changes: self._position}, count=_READ_COUNT)
            )
            if entries:
                self._apply(entries)
            else:
                self.lost_place += 1
                raise _Reload(f"lost place in the change stream: change {seq} not in it")

    async def _check_overlay(self, held: LayeredIndex, seq: int, stream_id: str | None) -> None:
        """Redis's overlay of the held snapshot is at ``seq`` (entry ``stream_id``), not
        past the held index: the same, behind it, or on another history."""
        if stream_id is None or held.stream_id == "0-0":
            if seq < held.change_seq:
                await self._behind(f"Redis has change {seq}, the held index {held.change_seq}")
            return
        if seq == held.change_seq and stream_id == held.stream_id:
            self._behind_since = None  # in step
            return
        if seq == held.change_seq or _stream_id_key(stream_id) > _stream_id_key(held.stream_id):
            raise _Reload(
                f"the stream's history forked (a failover lost writes): Redis's change {seq} "
                f"is entry {stream_id}, the held change {held.change_seq} is entry "
                f"{held.stream_id}",
                converge=True,
            )
        await self._behind(f"Redis has change {seq}, the held index {held.change_seq}")

    async def _behind(self, why: str) -> None:
        """Redis is behind the held index: a replica catching up, or a failover that
        lost writes. Wait ``behind_grace_s``, and as long as the node read is a
        replica still syncing with its primary; then take what Redis holds."""
        now = time.monotonic()
        if self._behind_since is None:
            self._behind_since = now
            self._behind_syncing = False
            log.warning(
                "Redis is behind the held index; waiting for it to catch up",
                extra={"reason": why, "grace_s": self.behind_grace_s},
            )
            return
        if now - self._behind_since <= self.behind_grace_s:
            return
        if await self._reading_a_syncing_replica():
            if not self._behind_syncing:  # said once per episode, not every poll
                self._behind_syncing = True
                log.warning(
                    "Redis is behind the held index and the replica read is cut off from its "
                    "primary or still syncing; keeping the held index until it has synced",
                    extra={"reason": why},
                )
            return
        raise _Reload(
            f"{why} for {self.behind_grace_s:g} s (a failover lost writes?)", converge=True
        )

    async def _reading_a_syncing_replica(self) -> bool:
        """Whether the node read is a replica whose link to its primary is down or
        still in its first sync (``INFO replication``): what it holds says nothing
        about what the primary has. False when the user may not run INFO."""
        try:
            info = await self.client.info("replication")
        except ResponseError:
            return False  # an ACL without +info: the grace alone decides
        if info.get("role") != "slave":
            return False
        return info.get("master_link_status") != "up" or bool(info.get("master_sync_in_progress"))

    async def _install(self, index: LayeredIndex, *, force: bool = False) -> bool:
        if not self.holder.swap(index, force=force):
            return False
        if self.on_swap is not None:
            await self.on_swap(index)
        return True

    def _save_to_cache_later(self) -> None:
        """Save the held index to the disk cache in a thread, coalescing bursts of changes."""
        if self.cache is None or self.source == "disk-cache":
            return
        self._cache_dirty = True
        if self._cache_task is None or self._cache_task.done():
            self._cache_task = asyncio.ensure_future(self._save_to_cache())

    async def _save_to_cache(self) -> None:
        cache = self.cache
        assert cache is not None
        while self._cache_dirty:
            self._cache_dirty = False
            held = self.held
            if held is None:
                return
            try:
                await asyncio.to_thread(cache.save_snapshot, held.base)
                await asyncio.to_thread(cache.save_overlay, held)
            except OSError as exc:
                log.warning(
                    "could not save the index to the disk cache",
                    extra={"error": str(exc)[:200], "dir": str(cache.directory)},
                )
                return

    def _start_from_disk_cache(self) -> None:
        if self.cache is None:
            return
        try:
            cached = self.cache.load()
        except (OSError, SnapshotError) as exc:
            log.warning("disk cache unreadable", extra={"error": str(exc)[:200]})
            return
        if cached is None:
            return
        if self.holder.swap(cached.index):
            self.source = "disk-cache"
            self.disk_cache_saved_at = cached.saved_at
            self._position = cached.index.stream_id
            log.warning(
                "Redis unreachable at start: deciding from the disk cache (stale)",
                extra={
                    "index_version": cached.index.version,
                    "saved_at": cached.saved_at,
                    "dir": str(self.cache.directory),
                },
            )
            if self.on_swap is not None:
                self._background(self.on_swap(cached.index))

    def _background(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)  # a reference, so the task is not collected mid-flight
        task.add_done_callback(self._tasks.discard)

    def _mark_ok(self) -> None:
        if not self.redis_ok:
            log.info("redis reachable", extra=self._log_facts())
        if not self.follower_up and self._logged_error is not None:
            log.info("following Redis again", extra={"last_error": self.last_error})
        self.redis_ok = True
        self.stale_since = None
        self.follower_up = True
        self.last_success = time.time()
        self._logged_error = None

    def _note_once(self, msg: str, *, level: int, exc: BaseException | None = None) -> None:
        """Log ``msg`` once per distinct cause until following succeeds again."""
        cause = f"{msg}|{type(exc).__name__}|{str(exc)[:120]}" if exc else msg
        if cause == self._logged_error:
            return
        self._logged_error = cause
        extra: dict[str, Any] = {"index_version": self.holder.version}
        if exc is not None:
            extra["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        log.log(level, msg, extra=extra, exc_info=_cause(exc) == "bug" if exc else False)

    def _mark_stale(self, exc: Exception) -> None:
        if self.redis_ok or self.stale_since is None:
            self.stale_since = time.time()
            log.warning(
                "redis unreachable or data unreadable; deciding from the held index (stale)"
                if self.holder.current is not None
                else "redis unreachable; no index held yet (NOT_SERVING)",
                extra={"error": str(exc)[:200], **self._log_facts()},
            )
        self.redis_ok = False

    def _log_facts(self) -> dict[str, Any]:
        details = self.health_details()
        facts = {k: details[k] for k in ("index_version", "source", "stale_since")}
        if self.stale_since is not None:
            facts["stale_since_utc"] = dt.datetime.fromtimestamp(
                self.stale_since, dt.UTC
            ).isoformat(timespec="seconds")
        return facts
