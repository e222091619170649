"""gateway.ops.disk_cache: the last index on disk, written atomically, read back exactly."""

from __future__ import annotations

import resource
import signal
from pathlib import Path

import numpy as np
import pytest

from contract.domain import Status
from contract.errors import SnapshotError
from contract.snapshot import ARRAY_DTYPES, read_arrays_file
from gateway.index import LayeredIndex, StatusIndex
from gateway.ops.disk_cache import OVERLAY_FILE, SNAPSHOT_FILE, SnapshotCache
from tests.factory import Person, build_arrays

HOSPITAL = "H11010500001"
PEOPLE = [
    Person("D110105000001", [(HOSPITAL, "2020-01-01", None)], [], [("2025-01-05", 7)]),
    Person("D110105000002", [(HOSPITAL, "2020-01-01", "2024-01-01")]),
]
CHANGE = [
    Person(
        "D110105000001",
        [(HOSPITAL, "2020-01-01", None)],
        [("2025-02-01", Status.SUSPENDED, "2025-04-30")],
    )
]


def layered(version: int = 4) -> LayeredIndex:
    base = StatusIndex(build_arrays(PEOPLE), version, {"has_points": True})
    return LayeredIndex(base).with_change(build_arrays(CHANGE), 3, "17-0")


def test_the_cached_index_reads_back_exactly(tmp_path: Path) -> None:
    index = layered()
    cache = SnapshotCache(tmp_path / "cache", "elig")
    assert cache.save_snapshot(index.base)
    assert not cache.save_snapshot(index.base)  # once per version
    cache.save_overlay(index)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [OVERLAY_FILE, SNAPSHOT_FILE]

    cached = SnapshotCache(tmp_path / "cache", "elig").load()
    assert cached is not None and cached.saved_at
    got = cached.index
    assert (got.version, got.stream_id, got.meta) == (index.version, "17-0", {"has_points": True})
    for name in ARRAY_DTYPES:
        assert np.array_equal(got.overlay_arrays[name], index.overlay_arrays[name]), name
    _, arrays = read_arrays_file(tmp_path / "cache" / SNAPSHOT_FILE)
    expected = build_arrays(PEOPLE)
    for name in ARRAY_DTYPES:
        assert np.array_equal(arrays[name], expected[name]), name
        assert arrays[name].ctypes.data % 8 == 0  # aligned for fast numpy reads


def test_an_overlay_of_another_snapshot_is_ignored(tmp_path: Path) -> None:
    cache = SnapshotCache(tmp_path, "elig")
    old = layered(version=4)
    cache.save_snapshot(old.base)
    cache.save_overlay(old)
    cache.save_snapshot(layered(version=5).base)  # a crash before its overlay was written
    cached = cache.load()
    assert cached is not None
    assert (cached.index.snapshot_version, cached.index.change_seq) == (5, 0)


def test_missing_or_foreign_caches_give_nothing_and_damage_is_named(tmp_path: Path) -> None:
    assert SnapshotCache(tmp_path / "none", "elig").load() is None
    cache = SnapshotCache(tmp_path, "elig")
    cache.save_snapshot(layered().base)
    assert SnapshotCache(tmp_path, "other").load() is None
    path = tmp_path / SNAPSHOT_FILE
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(SnapshotError, match=r"snapshot\.bin"):
        cache.load()
    path.write_bytes(b"not a cache")
    with pytest.raises(SnapshotError, match="not an arrays file"):
        cache.load()


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    cache = SnapshotCache(tmp_path, "elig")
    cache.save_snapshot(layered().base)
    before = (tmp_path / SNAPSHOT_FILE).read_bytes()
    bigger = [Person(f"D2201050{i:05d}", [(HOSPITAL, "2021-01-01", None)]) for i in range(500)]
    new = StatusIndex(build_arrays(PEOPLE + bigger), 9)
    # A disk that fills up mid-write: the file size limit makes write() fail (EFBIG).
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 100, hard))
    try:
        with pytest.raises(OSError):
            cache.save_snapshot(new)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert (tmp_path / SNAPSHOT_FILE).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [SNAPSHOT_FILE]
    cached = cache.load()
    assert cached is not None and cached.index.snapshot_version == 4
