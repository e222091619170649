"""loader.publish against the tests' private redis-server: atomic, versioned, tidy."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from typing import cast

import numpy as np
import pytest
import redis
from redis.client import Pipeline

import contract.snapshot
from contract.codes import encode_institution, encode_practitioner
from contract.days import DAY_NONE
from contract.domain import Status
from contract.errors import SnapshotError, StalePublishError
from contract.reads import read_current_version, read_manifest, read_snapshot
from contract.redis_target import online_replicas
from contract.snapshot import ARRAY_DTYPES, Arrays, Keys, empty_arrays
from gateway.ops.redis_process import RedisProcess
from loader.build import build_arrays
from loader.changes import publish_change
from loader.publish import Replication, collect_garbage, publish_snapshot
from loader.registry import Registry
from loader.timeline import StatusChange


def sample_arrays(n: int = 50, seed: int = 0) -> Arrays:
    rng = np.random.default_rng(seed)
    practitioner = np.array(
        [encode_practitioner(f"D{k:012d}") for k in rng.integers(0, 10**6, n)], dtype=np.uint64
    )
    institution = np.array(
        [encode_institution(f"H{k:011d}") for k in rng.integers(0, 20, n)], dtype=np.uint64
    )
    start = rng.integers(0, 20000, n).astype(np.uint16)
    registry = Registry(
        file="registry.csv",
        practitioner=practitioner,
        institution=institution,
        role=np.zeros(n, dtype=np.int32),
        role_names=("doctor",),
        registered_on=start,
        deregistered_on=np.full(n, DAY_NONE, dtype=np.uint16),
        lines=np.arange(2, n + 2, dtype=np.int64),
    )
    key = int(practitioner[0])
    timelines = {key: [StatusChange(100, Status.SUSPENDED, 130), StatusChange(131, Status.ACTIVE)]}
    return build_arrays(registry, timelines, {key: [(100, 9)]})


def assert_same(a: Arrays, b: Arrays) -> None:
    for name in ARRAY_DTYPES:
        assert a[name].dtype == b[name].dtype, name
        assert np.array_equal(a[name], b[name]), name


def versions_in_redis(client: redis.Redis, keys: Keys) -> set[int]:
    found = set()
    for key in client.scan_iter(match=f"{keys.prefix}:snapshot:*"):
        head = key.decode()[len(keys.prefix) + len(":snapshot:") :].split(":")[0]
        if head.isdigit():
            found.add(int(head))
    return found


def test_published_arrays_read_back_equal(redis_client: redis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    arrays = sample_arrays()
    result = publish_snapshot(redis_client, keys, arrays, {"source": "test"})
    assert read_current_version(redis_client, keys) == result.version
    snapshot = read_snapshot(redis_client, keys)
    assert snapshot is not None
    manifest, back = snapshot
    assert manifest.version == result.version
    assert manifest.meta == {"source": "test"}
    assert_same(arrays, back)


def test_nothing_published_reads_none(redis_client: redis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    assert read_current_version(redis_client, keys) is None
    assert read_snapshot(redis_client, keys) is None
    assert read_manifest(redis_client, keys, 1) is None


def test_empty_snapshot_round_trips(redis_client: redis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    publish_snapshot(redis_client, keys, empty_arrays())
    snapshot = read_snapshot(redis_client, keys)
    assert snapshot is not None
    assert_same(empty_arrays(), snapshot[1])


def test_many_chunks_round_trip(
    redis_client: redis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(contract.snapshot, "CHUNK_BYTES", 64)
    keys = Keys(prefix)
    arrays = sample_arrays(n=200)
    version = publish_snapshot(redis_client, keys, arrays, batch_bytes=256).version
    manifest = read_manifest(redis_client, keys, version)
    assert manifest is not None
    assert manifest.chunks["prac_codes"] > 1
    snapshot = read_snapshot(redis_client, keys)
    assert snapshot is not None
    assert_same(arrays, snapshot[1])


def test_versions_go_up_and_the_flip_is_announced(redis_client: redis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    first = publish_snapshot(redis_client, keys, sample_arrays(seed=1))
    second = publish_snapshot(redis_client, keys, sample_arrays(seed=2))
    assert second.version > first.version
    assert first.previous is None
    assert second.previous == first.version
    # The flip announces itself on the change stream, which gateways follow;
    # it trims the markers of the versions it supersedes.
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], redis_client.xrange(keys.changes))
    assert [(f[b"kind"], int(f[b"version"])) for _, f in entries] == [(b"snapshot", second.version)]


def test_garbage_collection_keeps_current_and_previous(
    redis_client: redis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    versions = [
        publish_snapshot(redis_client, keys, sample_arrays(seed=s)).version for s in range(4)
    ]
    assert versions_in_redis(redis_client, keys) == set(versions[-2:])
    # The previous version is still whole, for a gateway that is reading it.
    previous = read_snapshot(redis_client, keys, versions[-2])
    assert previous is not None
    assert_same(previous[1], sample_arrays(seed=2))


def test_garbage_collection_removes_partial_writes_of_killed_runs(
    redis_client: redis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    publish_snapshot(redis_client, keys, sample_arrays(seed=1))
    killed = int(redis_client.incr(keys.seq))  # a run that died after writing a chunk
    redis_client.set(keys.chunk(killed, "prac_codes", 0), b"partial")
    latest = publish_snapshot(redis_client, keys, sample_arrays(seed=2))
    assert killed not in versions_in_redis(redis_client, keys)
    assert latest.deleted_keys >= 1


def test_garbage_collection_leaves_newer_runs_alone(redis_client: redis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    first = publish_snapshot(redis_client, keys, sample_arrays(seed=1)).version
    redis_client.set(keys.chunk(first + 10, "prac_codes", 0), b"in progress")
    collect_garbage(redis_client, keys, first, None)
    assert redis_client.exists(keys.chunk(first + 10, "prac_codes", 0))
    assert redis_client.exists(keys.manifest(first))


def test_stale_version_never_overwrites_a_newer_current(
    redis_client: redis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    publish_snapshot(redis_client, keys, sample_arrays(seed=1))
    # Another loader got a higher version and flipped while this one was writing.
    redis_client.set(keys.current, 1000)
    with pytest.raises(StalePublishError) as excinfo:
        publish_snapshot(redis_client, keys, sample_arrays(seed=2))
    assert excinfo.value.current == 1000
    assert read_current_version(redis_client, keys) == 1000
    assert excinfo.value.version not in versions_in_redis(redis_client, keys)


def test_failed_write_leaves_current_untouched_and_cleans_up(
    redis_client: redis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(contract.snapshot, "CHUNK_BYTES", 64)
    keys = Keys(prefix)
    good = sample_arrays(seed=1)
    before = publish_snapshot(redis_client, keys, good).version

    real_execute = Pipeline.execute
    calls = []

    def failing_execute(self: Pipeline, raise_on_error: bool = True) -> list[object]:
        calls.append(1)
        if len(calls) == 3:  # some chunks are already written
            raise redis.ConnectionError("connection lost")
        return real_execute(self, raise_on_error)

    monkeypatch.setattr(Pipeline, "execute", failing_execute)
    with pytest.raises(redis.ConnectionError):
        publish_snapshot(redis_client, keys, sample_arrays(seed=2), batch_bytes=128)
    monkeypatch.setattr(Pipeline, "execute", real_execute)

    assert read_current_version(redis_client, keys) == before
    assert versions_in_redis(redis_client, keys) == {before}
    snapshot = read_snapshot(redis_client, keys)
    assert snapshot is not None
    assert_same(good, snapshot[1])


def test_failed_flip_leaves_current_untouched(
    redis_client: redis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = Keys(prefix)
    before = publish_snapshot(redis_client, keys, sample_arrays(seed=1)).version

    def broken_flip(
        client: redis.Redis, keys: Keys, version: int, *rest: object
    ) -> tuple[int, int]:
        raise redis.TimeoutError("timed out")

    monkeypatch.setattr("loader.publish._flip", broken_flip)
    with pytest.raises(redis.TimeoutError):
        publish_snapshot(redis_client, keys, sample_arrays(seed=2))
    assert read_current_version(redis_client, keys) == before
    assert versions_in_redis(redis_client, keys) == {before}


def test_a_flip_whose_reply_was_lost_is_published_and_kept(
    redis_client: redis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The script ran, the connection broke before its reply (or during WAIT, in a
    failover): the version is current, so its keys must not be deleted."""
    from loader import publish

    keys = Keys(prefix)
    before = publish_snapshot(redis_client, keys, sample_arrays(seed=1)).version
    real_flip = publish._flip

    def flip_then_lose_the_reply(*args: object, **kwargs: object) -> tuple[int, int, int]:
        real_flip(*args, **kwargs)  # type: ignore[arg-type]
        raise redis.ConnectionError("Connection closed by server.")

    monkeypatch.setattr("loader.publish._flip", flip_then_lose_the_reply)
    result = publish_snapshot(redis_client, keys, sample_arrays(seed=2))
    assert read_current_version(redis_client, keys) == result.version > before
    assert result.replication.confirmed  # no replicas here: none asked for
    assert read_snapshot(redis_client, keys) is not None  # every chunk still there


def test_invalid_arrays_are_refused_before_writing(redis_client: redis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    arrays = sample_arrays()
    arrays["prac_codes"] = arrays["prac_codes"][::-1].copy()
    with pytest.raises(SnapshotError):
        publish_snapshot(redis_client, keys, arrays)
    assert redis_client.get(keys.seq) is None
    assert read_current_version(redis_client, keys) is None


def test_flip_refuses_a_version_without_manifest(redis_client: redis.Redis, prefix: str) -> None:
    from loader.publish import _flip

    keys = Keys(prefix)
    assert _flip(redis_client, keys, 5, -1, "no-epoch") == (-1, 0, 0)
    assert read_current_version(redis_client, keys) is None


# -- replication: WAIT after the flip ------------------------------------------------


@pytest.fixture
def with_replica() -> Iterator[tuple[redis.Redis, RedisProcess]]:
    """A primary (its client) and its replica's process, in sync."""
    with RedisProcess() as primary, RedisProcess() as replica:
        client = redis.Redis.from_url(primary.url)
        client.config_set("repl-diskless-sync-delay", 0)
        replica_client = redis.Redis.from_url(replica.url)
        replica_client.replicaof("127.0.0.1", primary.port)
        replica_client.close()
        deadline = time.monotonic() + 10
        while online_replicas(client.info("replication")) < 1:
            assert time.monotonic() < deadline, "the replica never synced"
            time.sleep(0.02)
        try:
            yield client, replica
        finally:
            client.close()


@contextlib.contextmanager
def stopped(process: RedisProcess) -> Iterator[None]:
    """The replica frozen (SIGSTOP): connected, online, acknowledging nothing."""
    assert process.proc is not None
    process.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        process.proc.send_signal(signal.SIGCONT)


def test_without_replicas_nothing_is_waited_for(redis_client: redis.Redis, prefix: str) -> None:
    result = publish_snapshot(redis_client, Keys(prefix), sample_arrays())
    assert result.replication == Replication(wanted=0, acked=0, timeout_ms=0, online=0)
    assert result.replication.confirmed


def test_a_publication_waits_for_a_replica_when_there_is_one(
    with_replica: tuple[redis.Redis, RedisProcess], prefix: str
) -> None:
    client, _ = with_replica
    keys = Keys(prefix)
    result = publish_snapshot(client, keys, sample_arrays())
    assert (result.replication.wanted, result.replication.acked) == (1, 1)
    assert result.replication.online == 1 and result.replication.confirmed
    change = publish_change(client, keys, sample_arrays(n=3, seed=5))
    assert (change.replication.wanted, change.replication.acked) == (1, 1)
    none = publish_change(client, keys, sample_arrays(n=3, seed=6), wait_replicas=0)
    assert none.replication.wanted == 0


def test_a_replica_that_does_not_acknowledge_is_reported_not_raised(
    with_replica: tuple[redis.Redis, RedisProcess], prefix: str
) -> None:
    """Published on the primary all the same (current flipped, change in the stream):
    the result says the replicas did not confirm it, for the CLI to fail loudly."""
    client, replica = with_replica
    keys = Keys(prefix)
    with stopped(replica):
        started = time.monotonic()
        result = publish_snapshot(client, keys, sample_arrays(), wait_timeout_ms=300)
        assert time.monotonic() - started >= 0.3
        assert read_current_version(client, keys) == result.version
        assert (result.replication.wanted, result.replication.acked) == (1, 0)
        assert not result.replication.confirmed
        assert "may not survive a failover" in result.replication.shortfall("it")
        change = publish_change(client, keys, sample_arrays(n=3, seed=5), wait_timeout_ms=300)
        assert change.seq == 1 and not change.replication.confirmed
    assert client.execute_command("WAIT", 1, 10_000) == 1  # type: ignore[no-untyped-call]
    two = publish_change(
        client, keys, sample_arrays(n=3, seed=6), wait_replicas=2, wait_timeout_ms=200
    )
    assert (two.replication.wanted, two.replication.acked) == (2, 1)
