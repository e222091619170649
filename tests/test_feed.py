"""gateway.feed against a real redis-server: the follower loads the snapshot and
its overlay, applies changes from the stream in order, reloads when it lost
its place or a new snapshot is published, keeps deciding while Redis is
down (fail-static), catches up when it returns, and starts from the disk
cache when Redis is down at start."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
import redis.asyncio as aioredis

from contract import codes
from contract.changes import index_version
from contract.days import iso_to_day
from contract.domain import Status
from contract.snapshot import Keys
from gateway.feed import SnapshotFollower
from gateway.index import IndexHolder, LayeredIndex
from gateway.ops.disk_cache import SnapshotCache
from gateway.ops.redis_process import RedisProcess, free_port
from loader.changes import publish_change
from loader.publish import publish_snapshot
from tests.factory import Person, build_arrays

HOSPITAL = "H11010500001"
DOCTORS = [f"D1101050000{i:02d}" for i in range(1, 9)]
DAY = iso_to_day("2025-03-01")
POLL_S = 0.05


def active(code: str) -> Person:
    return Person(code, [(HOSPITAL, "2020-01-01", None)])


def suspended(code: str) -> Person:
    return Person(
        code, [(HOSPITAL, "2020-01-01", None)], [("2025-02-01", Status.SUSPENDED, "2025-04-30")]
    )


def status_of(holder: IndexHolder, code: str) -> int:
    index = holder.current
    assert index is not None
    key = np.array([codes.encode_practitioner(code)], dtype=np.int64)
    return int(index.lookup(index.rows(key), np.array([DAY], dtype=np.int64), -1).status[0])


def held(holder: IndexHolder) -> LayeredIndex:
    assert isinstance(holder.current, LayeredIndex)
    return holder.current


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def run_follower(
    url: str,
    prefix: str,
    body: Callable[[SnapshotFollower], Awaitable[None]],
    cache_dir: Path | None = None,
) -> SnapshotFollower:
    """Run a follower in its own event loop while ``body`` drives the test."""

    async def main() -> SnapshotFollower:
        client = aioredis.Redis.from_url(url, socket_connect_timeout=0.5)
        cache = SnapshotCache(cache_dir, prefix) if cache_dir is not None else None
        follower = SnapshotFollower(
            client, Keys(prefix), IndexHolder(), poll_interval_s=POLL_S, cache=cache
        )
        task = asyncio.create_task(follower.run())
        try:
            await body(follower)
        finally:
            task.cancel()
            # Bounded: a follower that swallows its cancellation would hang Gateway.stop().
            await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)
            await client.aclose()
        return follower

    return asyncio.run(main())


@pytest.fixture
def published(redis_client: redis.Redis, prefix: str) -> int:
    people = [active(code) for code in DOCTORS]
    return publish_snapshot(redis_client, Keys(prefix), build_arrays(people)).version


def test_changes_apply_in_order_on_top_of_the_snapshot_without_rebuilding_it(
    redis_url: str, redis_client: redis.Redis, prefix: str, published: int
) -> None:
    keys = Keys(prefix)

    async def body(follower: SnapshotFollower) -> None:
        holder = follower.holder
        await until(lambda: holder.current is not None, "the first load")
        base = held(holder).base
        assert holder.version == index_version(published, 0)
        for n, code in enumerate(DOCTORS[:3], start=1):
            publish_change(redis_client, keys, build_arrays([suspended(code)]))
            await until(lambda n=n: held(holder).change_seq == n, f"change {n}")  # type: ignore[misc]
            assert status_of(holder, code) == Status.SUSPENDED
        assert held(holder).base is base  # the snapshot's arrays were not rebuilt
        assert holder.version == index_version(published, 3)
        assert status_of(holder, DOCTORS[3]) == Status.ACTIVE
        # A repair: the complete new record of DOCTORS[0] has no suspension.
        publish_change(redis_client, keys, build_arrays([active(DOCTORS[0])]))
        await until(lambda: held(holder).change_seq == 4, "change 4")
        assert status_of(holder, DOCTORS[0]) == Status.ACTIVE
        assert follower.change_lag_seconds is not None

    follower = run_follower(redis_url, prefix, body)
    assert (follower.changes_applied, follower.lost_place) == (4, 0)


def test_a_late_follower_loads_the_overlay_and_applies_nothing_twice(
    redis_url: str, redis_client: redis.Redis, prefix: str, published: int
) -> None:
    keys = Keys(prefix)
    for code in DOCTORS[:3]:
        publish_change(redis_client, keys, build_arrays([suspended(code)]))

    async def body(follower: SnapshotFollower) -> None:
        holder = follower.holder
        await until(lambda: holder.current is not None, "the first load")
        assert held(holder).change_seq == 3  # from the overlay hash, not the stream
        publish_change(redis_client, keys, build_arrays([suspended(DOCTORS[3])]))
        await until(lambda: held(holder).change_seq == 4, "change 4")
        assert [status_of(holder, c) for c in DOCTORS[:5]] == [Status.SUSPENDED] * 4 + [
            Status.ACTIVE
        ]

    follower = run_follower(redis_url, prefix, body)
    assert follower.changes_applied == 1


def test_a_snapshot_without_an_overlay_hash_is_followed_from_the_stream_start(
    redis_url: str, redis_client: redis.Redis, prefix: str, published: int
) -> None:
    keys = Keys(prefix)
    for code in DOCTORS[:2]:
        publish_change(redis_client, keys, build_arrays([suspended(code)]))
    redis_client.delete(keys.overlay(published))  # as if published before live changes

    async def body(follower: SnapshotFollower) -> None:
        await until(lambda: follower.changes_applied == 2, "both changes from the stream")
        assert held(follower.holder).change_seq == 2

    run_follower(redis_url, prefix, body)


@pytest.mark.parametrize("keep", [0, 1])
def test_a_trimmed_stream_forces_a_reload(
    redis_url: str, redis_client: redis.Redis, prefix: str, published: int, keep: int
) -> None:
    keys = Keys(prefix)

    async def body(follower: SnapshotFollower) -> None:
        holder = follower.holder
        await until(lambda: holder.current is not None, "the first load")
        publish_change(redis_client, keys, build_arrays([suspended(DOCTORS[0])]))
        await until(lambda: held(holder).change_seq == 1, "change 1")
        # Without yielding to the follower: three more changes, then the
        # stream is trimmed past them (keeping `keep` entries).
        for code in DOCTORS[1:4]:
            publish_change(redis_client, keys, build_arrays([suspended(code)]))
        redis_client.xtrim(keys.changes, maxlen=keep, approximate=False)
        await until(lambda: held(holder).change_seq == 4, "the reload")
        assert [status_of(holder, c) for c in DOCTORS[:4]] == [Status.SUSPENDED] * 4

    follower = run_follower(redis_url, prefix, body)
    assert follower.lost_place == 1, follower.health_details()
    assert follower.reloads >= 1


def test_a_new_snapshot_supersedes_the_overlay(
    redis_url: str, redis_client: redis.Redis, prefix: str, published: int
) -> None:
    keys = Keys(prefix)

    async def body(follower: SnapshotFollower) -> None:
        holder = follower.holder
        await until(lambda: holder.current is not None, "the first load")
        publish_change(redis_client, keys, build_arrays([suspended(DOCTORS[0])]))
        await until(lambda: held(holder).change_seq == 1, "change 1")
        people = [active(c) for c in DOCTORS[1:]]
        v2 = publish_snapshot(redis_client, keys, build_arrays(people)).version
        await until(lambda: held(holder).snapshot_version == v2, "snapshot 2")
        assert holder.version == index_version(v2, 0) > index_version(published, 1)
        assert status_of(holder, DOCTORS[0]) == Status.NOT_REGISTERED  # not in v2
        publish_change(redis_client, keys, build_arrays([suspended(DOCTORS[1])]))
        await until(lambda: holder.version == index_version(v2, 1), "change 1 on v2")

    run_follower(redis_url, prefix, body)


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    """A redis-server this test may stop and restart (the session's stays up)."""
    with RedisProcess() as server:
        yield server


def test_fail_static_while_redis_is_down_then_catch_up(
    own_redis: RedisProcess, prefix: str
) -> None:
    keys = Keys(prefix)
    client = redis.Redis.from_url(own_redis.url)
    version = publish_snapshot(client, keys, build_arrays([active(c) for c in DOCTORS])).version

    async def body(follower: SnapshotFollower) -> None:
        holder = follower.holder
        await until(lambda: follower.redis_ok and holder.current is not None, "the first load")
        publish_change(client, keys, build_arrays([suspended(DOCTORS[0])]))
        await until(lambda: held(holder).change_seq == 1, "change 1")
        client.save()  # persistence is off; keep the data across the restart
        own_redis.stop()
        await until(lambda: not follower.redis_ok, "the follower to notice")
        assert follower.stale_since is not None
        assert follower.health_details()["stale"] is True
        assert holder.version == index_version(version, 1)  # still deciding
        assert status_of(holder, DOCTORS[0]) == Status.SUSPENDED
        own_redis.start()
        publish_change(client, keys, build_arrays([suspended(DOCTORS[1])]))
        await until(lambda: held(holder).change_seq == 2, "the catch-up", timeout_s=15)
        await until(lambda: follower.redis_ok, "redis_ok again")
        assert follower.stale_since is None

    try:
        run_follower(own_redis.url, prefix, body)
    finally:
        client.close()


def test_start_from_the_disk_cache_while_redis_is_down(
    redis_url: str, redis_client: redis.Redis, prefix: str, published: int, tmp_path: Path
) -> None:
    keys = Keys(prefix)
    cache_dir = tmp_path / "cache"

    async def fill_cache(follower: SnapshotFollower) -> None:
        await until(lambda: follower.holder.current is not None, "the first load")
        publish_change(redis_client, keys, build_arrays([suspended(DOCTORS[0])]))
        await until(lambda: follower.changes_applied == 1, "change 1")
        cache = SnapshotCache(cache_dir, prefix)

        def saved_seq() -> int:
            try:
                cached = cache.load()
            except Exception:  # a file being replaced is never torn; absent is fine
                return -1
            return cached.index.change_seq if cached is not None else -1

        await until(lambda: saved_seq() == 1, "the cache to hold change 1")

    run_follower(redis_url, prefix, fill_cache, cache_dir)

    dead = f"redis://127.0.0.1:{free_port()}/0"

    async def from_cache(follower: SnapshotFollower) -> None:
        await until(lambda: follower.holder.current is not None, "the cached index")
        assert follower.source == "disk-cache"
        assert not follower.redis_ok and follower.stale_since is not None
        assert follower.disk_cache_saved_at
        assert follower.holder.version == index_version(published, 1)
        assert status_of(follower.holder, DOCTORS[0]) == Status.SUSPENDED
        assert status_of(follower.holder, DOCTORS[1]) == Status.ACTIVE

    run_follower(dead, prefix, from_cache, cache_dir)

    async def other_prefix(follower: SnapshotFollower) -> None:
        await asyncio.sleep(0.3)
        assert follower.holder.current is None  # a cache of another prefix is not used

    run_follower(dead, prefix + "-other", other_prefix, cache_dir)


# -- failovers: the promoted replica lacks the last writes ------------------------------
#
# Two redis-servers: A, the primary, and B, its replica, promoted (REPLICAOF NO
# ONE) while A goes on taking writes B never gets: what a Sentinel failover does
# when the old primary had not replicated its last writes. The follower reads A,
# then B (its client swapped, as a Sentinel pool reconnects to the new primary).


@pytest.fixture
def primary_and_replica() -> Iterator[tuple[redis.Redis, redis.Redis]]:
    with RedisProcess() as a, RedisProcess() as b:
        client_a, client_b = redis.Redis.from_url(a.url), redis.Redis.from_url(b.url)
        client_a.config_set("repl-diskless-sync-delay", 0)
        client_b.replicaof("127.0.0.1", a.port)
        try:
            yield client_a, client_b
        finally:
            client_a.close()
            client_b.close()


def replicated(primary: redis.Redis) -> None:
    """Wait until the replica has every write so far."""
    deadline = time.monotonic() + 10
    while int(primary.execute_command("WAIT", 1, 1000)) < 1:  # type: ignore[no-untyped-call]
        assert time.monotonic() < deadline, "the replica never synced"


def promote(replica: redis.Redis) -> None:
    replica.replicaof("NO", "ONE")


def follow_a_then_b(
    client_a: redis.Redis,
    client_b: redis.Redis,
    prefix: str,
    on_a: Callable[[SnapshotFollower], Awaitable[None]],
    on_b: Callable[[SnapshotFollower], Awaitable[None]],
    behind_grace_s: float = 10.0,
) -> SnapshotFollower:
    url = "redis://127.0.0.1:{}/0"
    a_url = url.format(client_a.connection_pool.connection_kwargs["port"])
    b_url = url.format(client_b.connection_pool.connection_kwargs["port"])

    async def main() -> SnapshotFollower:
        async_a = aioredis.Redis.from_url(a_url, socket_connect_timeout=0.5)
        async_b = aioredis.Redis.from_url(b_url, socket_connect_timeout=0.5)
        follower = SnapshotFollower(
            async_a,
            Keys(prefix),
            IndexHolder(),
            poll_interval_s=POLL_S,
            behind_grace_s=behind_grace_s,
        )
        task = asyncio.create_task(follower.run())
        try:
            await on_a(follower)
            follower.client = async_b  # the failover: the next command reaches B
            await on_b(follower)
        finally:
            task.cancel()
            await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)
            await async_a.aclose()
            await async_b.aclose()
        return follower

    return asyncio.run(main())


def test_changes_lost_in_a_failover_are_replaced_by_the_new_primarys(
    primary_and_replica: tuple[redis.Redis, redis.Redis], prefix: str
) -> None:
    """A had changes 1-3, B only 1; B then publishes its own change 2: the follower
    sees a change numbered below the held one after its place, and converges on B
    (never stuck skipping B's changes as "already applied")."""
    a, b = primary_and_replica
    keys = Keys(prefix)
    version = publish_snapshot(a, keys, build_arrays([active(c) for c in DOCTORS])).version
    publish_change(a, keys, build_arrays([suspended(DOCTORS[0])]))
    replicated(a)
    promote(b)
    for code in DOCTORS[1:3]:
        publish_change(a, keys, build_arrays([suspended(code)]), wait_replicas=0)  # lost with A

    async def on_a(follower: SnapshotFollower) -> None:
        await until(lambda: follower.holder.version == index_version(version, 3), "A's changes")

    async def on_b(follower: SnapshotFollower) -> None:
        assert publish_change(b, keys, build_arrays([suspended(DOCTORS[3])])).seq == 2
        await until(lambda: follower.rollbacks == 1, "the convergence on B")
        holder = follower.holder
        assert holder.version == index_version(version, 2)
        assert [status_of(holder, c) for c in DOCTORS[:4]] == [
            Status.SUSPENDED,
            Status.ACTIVE,  # A's change 2, lost
            Status.ACTIVE,  # A's change 3, lost
            Status.SUSPENDED,  # B's change 2
        ]
        publish_change(b, keys, build_arrays([suspended(DOCTORS[4])]))
        await until(lambda: held(holder).change_seq == 3, "B's change 3, from the stream")
        assert status_of(holder, DOCTORS[1]) == Status.ACTIVE

    follower = follow_a_then_b(a, b, prefix, on_a, on_b)
    assert follower.rollbacks == 1, follower.health_details()


def test_a_snapshot_version_reused_after_a_failover_is_read_again(
    primary_and_replica: tuple[redis.Redis, redis.Redis], prefix: str
) -> None:
    """A's flip to v2 was lost with A, and so was its INCR: B's next load is v2 again,
    other data. The follower holding A's v2 sees the marker of its own version
    after its place and reads B's v2, not the overlay of B's on top of A's arrays."""
    a, b = primary_and_replica
    keys = Keys(prefix)
    v1 = publish_snapshot(a, keys, build_arrays([active(c) for c in DOCTORS])).version
    replicated(a)
    promote(b)
    v2 = publish_snapshot(
        a, keys, build_arrays([suspended(c) for c in DOCTORS]), wait_replicas=0
    ).version

    async def on_a(follower: SnapshotFollower) -> None:
        await until(lambda: follower.holder.version == index_version(v2, 0), "A's v2")
        assert status_of(follower.holder, DOCTORS[5]) == Status.SUSPENDED

    async def on_b(follower: SnapshotFollower) -> None:
        people = [active(c) for c in DOCTORS[:6]]  # DOCTORS[6:] not registered in B's v2
        assert publish_snapshot(b, keys, build_arrays(people)).version == v2  # reused
        publish_change(b, keys, build_arrays([suspended(DOCTORS[0])]))
        holder = follower.holder
        await until(lambda: holder.version == index_version(v2, 1), "B's v2 and its change")
        assert status_of(holder, DOCTORS[0]) == Status.SUSPENDED
        assert status_of(holder, DOCTORS[5]) == Status.ACTIVE  # B's arrays, not A's
        assert status_of(holder, DOCTORS[6]) == Status.NOT_REGISTERED
        assert follower.rollbacks == 1

    follow_a_then_b(a, b, prefix, on_a, on_b)
    assert v1 < v2


def test_a_change_on_an_older_snapshot_after_a_lost_flip_is_converged_on(
    primary_and_replica: tuple[redis.Redis, redis.Redis], prefix: str
) -> None:
    a, b = primary_and_replica
    keys = Keys(prefix)
    v1 = publish_snapshot(a, keys, build_arrays([active(c) for c in DOCTORS])).version
    replicated(a)
    promote(b)
    v2 = publish_snapshot(
        a, keys, build_arrays([active(c) for c in DOCTORS[:4]]), wait_replicas=0
    ).version

    async def on_a(follower: SnapshotFollower) -> None:
        await until(lambda: follower.holder.version == index_version(v2, 0), "A's v2")

    async def on_b(follower: SnapshotFollower) -> None:
        assert publish_change(b, keys, build_arrays([suspended(DOCTORS[7])])).base == v1
        holder = follower.holder
        await until(lambda: holder.version == index_version(v1, 1), "B's v1 and its change")
        assert status_of(holder, DOCTORS[7]) == Status.SUSPENDED  # only in v1
        assert follower.rollbacks == 1

    follow_a_then_b(a, b, prefix, on_a, on_b)


def test_a_primary_behind_the_held_index_is_waited_for_then_taken(
    primary_and_replica: tuple[redis.Redis, redis.Redis], prefix: str
) -> None:
    """Nothing published after the failover: B is behind (change 1 of 2). A replica
    catching up would be there within the grace; a lost write never is, so after
    it the follower takes B's data, saying so."""
    a, b = primary_and_replica
    keys = Keys(prefix)
    version = publish_snapshot(a, keys, build_arrays([active(c) for c in DOCTORS])).version
    publish_change(a, keys, build_arrays([suspended(DOCTORS[0])]))
    replicated(a)
    promote(b)
    publish_change(a, keys, build_arrays([suspended(DOCTORS[1])]), wait_replicas=0)  # lost with A
    grace_s = 0.5

    async def on_a(follower: SnapshotFollower) -> None:
        await until(lambda: follower.holder.version == index_version(version, 2), "A's changes")

    async def on_b(follower: SnapshotFollower) -> None:
        holder = follower.holder
        swapped = time.monotonic()
        await until(lambda: holder.version == index_version(version, 1), "B's state")
        assert time.monotonic() - swapped >= grace_s  # not before the grace
        assert status_of(holder, DOCTORS[1]) == Status.ACTIVE
        assert follower.rollbacks == 1
        assert follower.health_details()["rollbacks"] == 1

    follow_a_then_b(a, b, prefix, on_a, on_b, behind_grace_s=grace_s)


def test_a_replica_cut_off_from_its_primary_is_not_taken_for_the_truth(
    primary_and_replica: tuple[redis.Redis, redis.Redis], prefix: str
) -> None:
    """Behind because its link to the primary is down (or its first sync is running):
    what it holds says nothing about what was published, so the grace does not end."""
    a, b = primary_and_replica
    keys = Keys(prefix)
    version = publish_snapshot(a, keys, build_arrays([active(c) for c in DOCTORS])).version
    publish_change(a, keys, build_arrays([suspended(DOCTORS[0])]))
    replicated(a)
    b.replicaof("127.0.0.1", free_port())  # its primary is gone: link down, data kept
    publish_change(a, keys, build_arrays([suspended(DOCTORS[1])]), wait_replicas=0)

    async def on_a(follower: SnapshotFollower) -> None:
        await until(lambda: follower.holder.version == index_version(version, 2), "A's changes")

    async def on_b(follower: SnapshotFollower) -> None:
        await asyncio.sleep(1.0)  # well past the grace
        assert follower.holder.version == index_version(version, 2)
        assert status_of(follower.holder, DOCTORS[1]) == Status.SUSPENDED
        assert follower.rollbacks == 0

    follow_a_then_b(a, b, prefix, on_a, on_b, behind_grace_s=0.2)
