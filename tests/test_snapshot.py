from __future__ import annotations

import numpy as np
import pytest

from contract import snapshot
from contract.errors import SnapshotError
from tests.factory import Person, build_arrays

PEOPLE = [Person("D110105000001", [("H11010500001", "2020-01-01", None)])]


def test_manifest_round_trips() -> None:
    arrays = build_arrays(PEOPLE)
    manifest = snapshot.new_manifest(7, arrays, {"has_points": False}, "epoch-1", None)
    again = snapshot.Manifest.from_json(manifest.to_json())
    assert again == manifest
    again.check_digests(arrays)
    changed = {k: v.copy() for k, v in arrays.items()}
    changed["reg_from"][0] += 1
    with pytest.raises(SnapshotError, match="reg_from does not match its digest"):
        again.check_digests(changed)
    assert again.lengths["prac_codes"] == 1
    assert again.lengths["reg_offsets"] == 2


@pytest.mark.parametrize(
    "raw",
    [b"{}", b"not json", b'{"format": 99, "version": 1}', b'{"format": 1, "version": 1}'],
)
def test_malformed_manifests_are_refused(raw: bytes) -> None:
    with pytest.raises(SnapshotError):
        snapshot.Manifest.from_json(raw)


def test_arrays_split_and_join_losslessly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot, "CHUNK_BYTES", 24)
    codes = np.arange(10, dtype="<u8") * 3
    parts = [bytes(p) for p in snapshot.split_chunks(codes)]
    assert [len(p) for p in parts] == [24, 24, 24, 8]
    assert snapshot.join_chunks("prac_codes", list(parts), 10).tolist() == codes.tolist()
    empty = [bytes(p) for p in snapshot.split_chunks(np.zeros(0, dtype="<u8"))]
    assert snapshot.join_chunks("prac_codes", list(empty), 0).tolist() == []


def test_a_missing_or_short_chunk_is_refused() -> None:
    with pytest.raises(SnapshotError, match="missing"):
        snapshot.join_chunks("prac_codes", [b"\0" * 8, None], 2)
    with pytest.raises(SnapshotError, match="bytes"):
        snapshot.join_chunks("prac_codes", [b"\0" * 12], 2)


@pytest.mark.parametrize(
    ("array", "broken"),
    [
        ("reg_offsets", np.array([0, 5], dtype="<u4")),
        ("reg_inst", np.array([9], dtype="<u4")),
        ("st_key", np.array([5 << 16, 1 << 16], dtype="<u8")),
        ("prac_codes", np.array([1], dtype="<i8")),
    ],
)
def test_validation_names_the_broken_array(array: str, broken: np.ndarray) -> None:
    arrays = build_arrays(PEOPLE)
    arrays[array] = broken
    if array == "st_key":
        arrays["st_status"] = np.zeros(2, dtype="u1")
        arrays["st_until"] = np.zeros(2, dtype="<u2")
    with pytest.raises(SnapshotError):
        snapshot.validate_arrays(arrays)


def test_keys_live_under_the_prefix() -> None:
    keys = snapshot.Keys("elig")
    assert keys.chunk(3, "prac_codes", 0) == "elig:snapshot:3:prac_codes:0"
    assert keys.manifest(3) == "elig:snapshot:3:manifest"
    with pytest.raises(ValueError):
        snapshot.Keys("bad prefix*")
