"""Snapshot arrays shared between worker processes through files (gateway.ops.shared_index)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from contract.snapshot import empty_arrays
from gateway import kernel  # type: ignore[attr-defined]  # compiled: no stubs
from gateway.index import StatusIndex
from gateway.ops.shared_index import SharedSnapshots
from tests.factory import Person, build_arrays

PEOPLE = [
    Person("D110105000001", [("H11010500001", "2020-01-01", None)]),
    Person("D110105000002", [("H11010500002", "2021-05-01", "2024-01-01")]),
]


def test_two_workers_map_one_file(tmp_path: Path) -> None:
    arrays = build_arrays(PEOPLE)
    first = SharedSnapshots(tmp_path).share(arrays, 7)
    second = SharedSnapshots(tmp_path).share(build_arrays(PEOPLE), 7)
    assert [p.name for p in tmp_path.iterdir()] == ["snapshot-7.bin"]
    for name, array in arrays.items():
        assert first[name].dtype == array.dtype
        assert first[name].tolist() == array.tolist() == second[name].tolist()
        assert not first[name].flags.writeable
    index = StatusIndex(first, 7)
    assert index.row_of(int(arrays["prac_codes"][1])) == 1


def test_older_versions_go_but_the_previous_stays(tmp_path: Path) -> None:
    shared = SharedSnapshots(tmp_path)
    for version in (1, 2, 3):
        shared.share(build_arrays(PEOPLE), version)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snapshot-2.bin", "snapshot-3.bin"]


def test_an_empty_snapshot_is_shared_too(tmp_path: Path) -> None:
    arrays = SharedSnapshots(tmp_path).share(empty_arrays(), 1)
    assert len(StatusIndex(arrays, 1)) == 0


def test_a_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("gateway.ops.shared_index.os.link", broken)
    with pytest.raises(OSError, match="disk full"):
        SharedSnapshots(tmp_path).share(build_arrays(PEOPLE), 1)
    assert list(tmp_path.iterdir()) == []


def test_a_worker_that_loses_the_race_maps_the_winners_file(tmp_path: Path) -> None:
    winner = SharedSnapshots(tmp_path).share(build_arrays(PEOPLE), 4)
    inode = (tmp_path / "snapshot-4.bin").stat().st_ino
    # The loser wrote its own file before it looked: the name stays the winner's.
    loser = SharedSnapshots(tmp_path)
    layout_arrays = build_arrays(PEOPLE)
    loser._write(loser.path(4), layout_arrays, 4)
    assert (tmp_path / "snapshot-4.bin").stat().st_ino == inode
    assert [p.name for p in tmp_path.iterdir()] == ["snapshot-4.bin"]
    assert winner["prac_codes"].tolist() == layout_arrays["prac_codes"].tolist()


def test_workers_share_one_packed_table_and_a_damaged_one_is_refused(tmp_path: Path) -> None:
    """The compiled claim path's hash table is built by the first worker only,
    mapped read-only by the others, and checked against the arrays."""
    arrays = SharedSnapshots(tmp_path).share(build_arrays(PEOPLE), 7)
    built: list[int] = []

    def build() -> npt.NDArray[np.uint64]:
        built.append(1)
        return kernel.PackedIndex(arrays).table_words  # type: ignore[no-any-return]

    first = SharedSnapshots(tmp_path).share_table(7, build)
    second = SharedSnapshots(tmp_path).share_table(7, build)
    assert len(built) == 1 and not second.flags.writeable
    assert first.tolist() == second.tolist()
    kernel.PackedIndex(arrays, second)  # fits its arrays
    damaged = np.array(second)
    damaged[1::2][damaged[0::2] != 0] = 10**6  # institutions out of range
    with pytest.raises(ValueError, match="out of range"):
        kernel.PackedIndex(arrays, damaged)
