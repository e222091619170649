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
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from contract import reads
from contract.changes import decode_arrays
from contract.errors import SnapshotError
from contract.snapshot import Keys
from gateway.index import Index, IndexHolder, LayeredIndex, StatusIndex
from gateway.ops.disk_cache import SnapshotCache
from gateway.ops.shared_index import SharedSnapshots

log = logging.getLogger(__name__)

# Entries read per XREAD: a burst of changes is merged and swapped in once.
_READ_COUNT = 500


async def load_snapshot(
    client: aioredis.Redis, keys: Keys, version: int, shared: SharedSnapshots | None = None
) -> StatusIndex:
    """Read snapshot ``version`` from Redis and build its index (its arrays
    mapped from ``shared``'s file when the gateway runs several workers)."""
    snapshot = await reads.run_async(client, reads.snapshot_plan(keys, version))
    if snapshot is None:
        raise SnapshotError(f"snapshot {version} has no manifest under {keys.manifest(version)}")
    arrays = snapshot.arrays
    if shared is not None:
        arrays = shared.share(arrays, version)
    # created_at (publication time) rides in meta: metrics report the
    # snapshot's age from publication, not from when this gateway loaded it.
    manifest = snapshot.manifest
    return StatusIndex(arrays, version, {**manifest.meta, "created_at": manifest.created_at})


async def load_overlay(client: aioredis.Redis, keys: Keys, base: StatusIndex) -> LayeredIndex:
    """``base`` with the changes published on top of it so far (one ``HGETALL``).

    A snapshot published before live changes existed has no overlay hash: it
    is followed from the start of the stream (its changes carry its version).
    """
    overlay = await reads.run_async(client, reads.overlay_plan(keys, base.version))
    return LayeredIndex(base, overlay.arrays, overlay.seq, overlay.stream_id or "0-0")


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
    """The follower must reload: a newer snapshot, or it lost its place in the stream."""


class SnapshotFollower:
    """Keeps ``holder`` on the newest snapshot plus every change published on top of it.

    Attributes for health details and metrics (read-only for others):
    ``redis_ok``, ``stale_since`` (Unix time Redis became unreachable, None
    while reachable), ``source`` ("none", "redis" or "disk-cache": where the
    held index came from), ``disk_cache_saved_at`` (ISO time the cached index
    was saved, when started from it), ``changes_applied``, ``reloads``,
    ``lost_place`` (reloads because entries were trimmed away),
    ``change_lag_seconds`` (publication to enforcement of the last change).
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
    ) -> None:
        self.client = client
        self.shared = shared
        self.keys = keys
        self.holder = holder
        self.poll_interval_s = poll_interval_s
        self.max_backoff_s = max_backoff_s
        self.on_swap = on_swap
        self.cache = cache
        self.redis_ok = False
        self.stale_since: float | None = None
        self.source = "none"
        self.disk_cache_saved_at: str | None = None
        self.changes_applied = 0
        self.reloads = 0
        self.lost_place = 0
        self.change_lag_seconds: float | None = None
        self._position = "0-0"
        self._cache_task: asyncio.Task[None] | None = None
        self._cache_dirty = False
        self._tasks: set[asyncio.Future[None]] = set()

    @property
    def held(self) -> LayeredIndex | None:
        index = self.holder.current
        return index if isinstance(index, LayeredIndex) else None

    def health_details(self) -> dict[str, Any]:
        """The facts for health details and logs: versions, staleness, where the data came from."""
        held = self.held
        return {
            "snapshot_version": held.snapshot_version if held else 0,
            "change_seq": held.change_seq if held else 0,
            "index_version": self.holder.version,
            "source": self.source,
            "redis_ok": self.redis_ok,
            "stale": not self.redis_ok,
            "stale_since": self.stale_since,
            "disk_cache_saved_at": self.disk_cache_saved_at,
            "changes_applied": self.changes_applied,
            "reloads": self.reloads,
            "lost_place": self.lost_place,
        }

    async def refresh(self) -> bool:
        """Load the current snapshot and its overlay if newer than what is held."""
        version = await reads.run_async(self.client, reads.current_version_plan(self.keys))
        held = self.held
        if version is None or (held is not None and version < held.snapshot_version):
            if held is not None and version is not None:
                log.warning(
                    "Redis has an older snapshot than the one held; keeping the held one",
                    extra={"redis_version": version, "index_version": held.version},
                )
            return False
        started = time.perf_counter()
        if held is not None and held.snapshot_version == version:
            base = held.base  # the same snapshot: only the overlay is re-read
        else:
            base = await load_snapshot(self.client, self.keys, version, self.shared)
        index = await load_overlay(self.client, self.keys, base)
        installed = await self._install(index)
        if installed or (held is not None and held.version == index.version):
            # Redis confirms what is held: follow from the stream position it gives.
            self._position = index.stream_id
            self.source = "redis"
            self.disk_cache_saved_at = None
            self._save_to_cache_later()
        if not installed:
            return False
        log.info(
            "index loaded",
            extra={
                "index_version": index.version,
                "snapshot_version": version,
                "change_seq": index.change_seq,
                "practitioners": len(index),
                "index_bytes": index.nbytes,
                "load_s": round(time.perf_counter() - started, 3),
            },
        )
        return True

    async def run(self) -> None:
        """Follow snapshots and changes until cancelled; never raises on Redis errors."""
        backoff = 0.05
        while True:
            _raise_if_cancelling()
            try:
                await self.refresh()
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
                log.info("reloading", extra={"reason": str(reason)})
            except (RedisError, OSError, SnapshotError) as exc:
                self._mark_stale(exc)
                if self.holder.current is None:
                    self._start_from_disk_cache()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)

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
        for entry_id, fields in entries:
            kind = fields.get(b"kind")
            if kind == b"snapshot":
                if int(fields[b"version"]) > index.snapshot_version:
                    self._swap_now(index)
                    raise _Reload(f"snapshot {int(fields[b'version'])} published")
            elif kind == b"change":
                base, seq = int(fields[b"base"]), int(fields[b"seq"])
                if base > index.snapshot_version:
                    self._swap_now(index)
                    raise _Reload(f"a change on top of snapshot {base}, newer than the held one")
                if base == index.snapshot_version and seq > index.change_seq:
                    if seq != index.change_seq + 1:
                        self.lost_place += 1
                        self._swap_now(index)
                        raise _Reload(
                            f"lost place in the change stream: change {seq} follows "
                            f"{index.change_seq} (entries were trimmed)"
                        )
                    change = decode_arrays(fields, f"change {base}.{seq} ({entry_id.decode()})")
                    index = index.with_change(change, seq, entry_id.decode())
                    self.changes_applied += 1
                    published_ns = int(fields.get(b"published_at_ns", b"0"))
                    if published_ns:
                        lag = max(time.time_ns() - published_ns, 0) / 1e9
            self._position = entry_id.decode()
        self._swap_now(index)
        if lag is not None:
            self.change_lag_seconds = lag

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
        place = reads.place_plan(self.keys, held.snapshot_version)
        current, seq = await reads.run_async(self.client, place)
        if current is not None and current > held.snapshot_version:
            raise _Reload(f"snapshot {current} is current")
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

    async def _install(self, index: LayeredIndex) -> bool:
        if not self.holder.swap(index):
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
        self.redis_ok = True
        self.stale_since = None

    def _mark_stale(self, exc: Exception) -> None:
        if self.redis_ok or self.stale_since is None:
            self.stale_since = time.time()
            log.warning(
                "redis unreachable or data unreadable; deciding from the held index (stale)",
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
