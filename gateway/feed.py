"""Loads published snapshots from Redis into the index and follows new ones.

A snapshot is read as a few large values (one per array chunk) in one
pipeline and wrapped zero-copy in numpy arrays; the new index replaces the
old one with a single assignment (``IndexHolder.swap``). The follower
listens on the snapshot channel and also polls ``current``, so a lost
pub/sub message delays a swap by at most ``poll_interval_s``. When Redis is
unreachable the gateway keeps deciding from the index it holds (fail-static)
and retries with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .errors import SnapshotError
from .index import IndexHolder, StatusIndex
from .snapshot import ARRAY_DTYPES, Keys, Manifest, join_chunks

log = logging.getLogger(__name__)


async def read_current_version(client: aioredis.Redis, keys: Keys) -> int:
    raw = await client.get(keys.current)
    return int(raw) if raw is not None else 0


async def load_snapshot(client: aioredis.Redis, keys: Keys, version: int) -> StatusIndex:
    """Read snapshot ``version`` from Redis and build its index."""
    raw_manifest = await client.get(keys.manifest(version))
    if raw_manifest is None:
        raise SnapshotError(f"snapshot {version} has no manifest under {keys.manifest(version)}")
    manifest = Manifest.from_json(cast(bytes, raw_manifest))
    if manifest.version != version:
        raise SnapshotError(f"manifest of snapshot {version} says version {manifest.version}")
    pipe = client.pipeline(transaction=False)
    for name in ARRAY_DTYPES:
        for i in range(manifest.chunks[name]):
            pipe.get(keys.chunk(version, name, i))
    parts = await pipe.execute()
    arrays = {}
    pos = 0
    for name in ARRAY_DTYPES:
        count = manifest.chunks[name]
        arrays[name] = join_chunks(name, parts[pos : pos + count], manifest.lengths[name])
        pos += count
    return StatusIndex(arrays, version, manifest.meta)


class SnapshotFollower:
    """Keeps ``holder`` on the newest published snapshot."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        holder: IndexHolder,
        *,
        poll_interval_s: float = 1.0,
        max_backoff_s: float = 5.0,
        on_swap: Callable[[StatusIndex], Awaitable[None]] | None = None,
    ) -> None:
        self.client = client
        self.keys = keys
        self.holder = holder
        self.poll_interval_s = poll_interval_s
        self.max_backoff_s = max_backoff_s
        self.on_swap = on_swap
        self.redis_ok = False
        self.stale_since: float | None = None  # wall-clock time Redis became unreachable

    async def refresh(self) -> bool:
        """Load the current snapshot if it is newer than the held one."""
        version = await read_current_version(self.client, self.keys)
        if version <= self.holder.version:
            return False
        started = time.perf_counter()
        index = await load_snapshot(self.client, self.keys, version)
        if not self.holder.swap(index):
            return False
        log.info(
            "index loaded",
            extra={
                "index_version": version,
                "practitioners": len(index),
                "index_bytes": index.nbytes,
                "load_s": round(time.perf_counter() - started, 3),
            },
        )
        if self.on_swap is not None:
            await self.on_swap(index)
        return True

    async def run(self) -> None:
        """Follow new snapshots until cancelled; never raises on Redis errors."""
        backoff = 0.1
        while True:
            try:
                pubsub = self.client.pubsub()
                await pubsub.subscribe(self.keys.published_channel)
                try:
                    while True:
                        await self.refresh()
                        self._mark_ok()
                        backoff = 0.1
                        # Wake on a publication, or poll in case one was missed.
                        await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=self.poll_interval_s
                        )
                finally:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, SnapshotError) as exc:
                self._mark_stale(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)

    def _mark_ok(self) -> None:
        if not self.redis_ok:
            log.info("redis reachable", extra={"index_version": self.holder.version})
        self.redis_ok = True
        self.stale_since = None

    def _mark_stale(self, exc: Exception) -> None:
        if self.redis_ok or self.stale_since is None:
            self.stale_since = time.time()
            log.warning(
                "redis unreachable or snapshot unreadable; deciding from the held index",
                extra={"error": str(exc)[:200], "index_version": self.holder.version},
            )
        self.redis_ok = False
