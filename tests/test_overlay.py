"""contract.changes: merging changes and reading the overlay before the snapshot.

The reference is a plain index built from scratch over the same people with
the changed records swapped in: the layered index must answer every lookup
exactly as it does."""

from __future__ import annotations

import random

import numpy as np
import pytest

from contract import codes
from contract.changes import (
    CHANGE_SEQ_BASE,
    decode_arrays,
    encode_arrays,
    index_version,
    merge_changes,
    split_index_version,
)
from contract.days import iso_to_day
from contract.domain import Status
from contract.errors import SnapshotError
from contract.snapshot import ARRAY_DTYPES, empty_arrays
from gateway.index import Index, LayeredIndex, StatusIndex
from tests.factory import Person, build_arrays, build_index

HOSPITALS = [f"H1101050000{i}" for i in range(1, 6)]
NEW_HOSPITAL = "H99999999999"


def random_person(rng: random.Random, code: str, hospitals: list[str]) -> Person:
    registrations = []
    for _ in range(rng.randint(0, 3)):
        start = 2018 + rng.randint(0, 6)
        end = f"{start + rng.randint(1, 4)}-03-01" if rng.random() < 0.4 else None
        registrations.append((rng.choice(hospitals), f"{start}-01-01", end))
    changes: list[tuple[str, Status, str | None]] = []
    year = 2019
    for _ in range(rng.randint(0, 3)):
        year += rng.randint(0, 2)
        status = rng.choice([Status.SUSPENDED, Status.TERMINATED, Status.WARNED, Status.ACTIVE])
        last = f"{year}-09-30" if status == Status.SUSPENDED else None
        changes.append((f"{year}-0{len(changes) + 1}-15", status, last))
    points = [(f"{2020 + i}-05-01", rng.randint(1, 11)) for i in range(rng.randint(0, 2))]
    return Person(code, registrations, changes, points)


def queries(people_codes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    days = [
        iso_to_day(f"{y}-{m:02d}-{d:02d}")
        for y in range(2018, 2027)
        for m in (1, 6)
        for d in (1, 20)
    ]
    keys = [codes.encode_practitioner(c) for c in people_codes] + [-1]
    grid_keys = np.array([k for k in keys for _ in days], dtype=np.int64)
    grid_days = np.array(days * len(keys), dtype=np.int64)
    return grid_keys, grid_days


def assert_same_answers(layered: Index, reference: StatusIndex, all_codes: list[str]) -> None:
    keys, days = queries(all_codes)
    for inst in [*HOSPITALS, NEW_HOSPITAL, "H00000000000"]:
        inst_key = codes.encode_institution(inst)
        got_rows = layered.rows(keys)
        want_rows = reference.rows(keys)
        assert np.array_equal(got_rows >= 0, want_rows >= 0)
        got = layered.lookup(got_rows, days, layered.institution_id(inst_key))
        want = reference.lookup(want_rows, days, reference.institution_id(inst_key))
        for name in ("found", "registered", "at_institution", "status", "until"):
            assert np.array_equal(getattr(got, name), getattr(want, name)), (inst, name)
        # The scalar fast path (small claims) answers the same.
        got_inst = layered.institution_id(inst_key)
        want_inst = reference.institution_id(inst_key)
        for key, day in list(zip(keys.tolist(), days.tolist(), strict=True))[::7]:
            assert layered.lookup_line(layered.row_of(key), day, got_inst) == (
                reference.lookup_line(reference.row_of(key), day, want_inst)
            ), (inst, key, day)
    for code in all_codes:
        key = np.array([codes.encode_practitioner(code)], dtype=np.int64)
        got_row, want_row = int(layered.rows(key)[0]), int(reference.rows(key)[0])
        for day in (iso_to_day("2020-06-01"), iso_to_day("2023-07-01")):
            assert layered.institutions_on(got_row, day) == reference.institutions_on(want_row, day)
            assert layered.points_on(got_row, day) == reference.points_on(want_row, day)
    assert len(layered) == len(reference)


@pytest.mark.parametrize("seed", range(8))
def test_layered_index_answers_like_an_index_rebuilt_with_the_changes(seed: int) -> None:
    rng = random.Random(seed)
    people = {f"D1101050{i:05d}": None for i in range(40)}
    base_people = {c: random_person(rng, c, HOSPITALS) for c in people}
    base = StatusIndex(build_arrays(list(base_people.values())), 3, {"has_points": True})
    layered = LayeredIndex(base)
    truth = dict(base_people)
    for seq in range(1, 5):
        # Changes to existing people, and people (and an institution) the snapshot lacks.
        changed = rng.sample(sorted(truth), 5) + [f"HY11010500{seq}{i:03d}" for i in range(2)]
        batch = [random_person(rng, c, [*HOSPITALS, NEW_HOSPITAL]) for c in changed]
        layered = layered.with_change(build_arrays(batch), seq, f"{seq}-0")
        truth.update({p.code: p for p in batch})
        assert layered.version == index_version(3, seq)
        reference = StatusIndex(build_arrays(list(truth.values())), 3, {"has_points": True})
        assert_same_answers(layered, reference, sorted(truth))
    assert layered.base is base  # the snapshot arrays were never rebuilt


def test_a_change_can_deregister_and_suspend_from_a_date() -> None:
    doctor = "D110105000001"
    base = build_index([Person(doctor, [(HOSPITALS[0], "2020-01-01", None)])], version=2)
    layered = LayeredIndex(base)
    key = np.array([codes.encode_practitioner(doctor)], dtype=np.int64)
    day = np.array([iso_to_day("2025-03-01")], dtype=np.int64)
    inst = layered.institution_id(codes.encode_institution(HOSPITALS[0]))
    assert layered.lookup(layered.rows(key), day, inst).status[0] == Status.ACTIVE
    suspended = Person(
        doctor,
        [(HOSPITALS[0], "2020-01-01", None)],
        [("2025-02-01", Status.SUSPENDED, "2025-04-30")],
    )
    layered = layered.with_change(build_arrays([suspended]), 1, "5-0")
    found = layered.lookup(layered.rows(key), day, inst)
    assert (found.status[0], found.until[0]) == (Status.SUSPENDED, iso_to_day("2025-04-30"))
    gone = Person(doctor, [(HOSPITALS[0], "2020-01-01", "2025-01-01")])
    layered = layered.with_change(build_arrays([gone]), 2, "6-0")
    found = layered.lookup(layered.rows(key), day, inst)
    assert (bool(found.registered[0]), found.status[0]) == (False, Status.NOT_REGISTERED)
    assert split_index_version(layered.version) == (2, 2)


def test_merge_keeps_unchanged_practitioners_and_replaces_changed_ones() -> None:
    a = Person("D110105000001", [(HOSPITALS[0], "2020-01-01", None)])
    b = Person(
        "D110105000002",
        [(HOSPITALS[1], "2021-01-01", None)],
        [("2024-01-01", Status.TERMINATED, None)],
    )
    b2 = Person("D110105000002", [(HOSPITALS[2], "2022-01-01", None)])
    merged = merge_changes(merge_changes(empty_arrays(), build_arrays([a, b])), build_arrays([b2]))
    expected = build_arrays([a, b2])
    for name in ARRAY_DTYPES:
        assert np.array_equal(merged[name], expected[name]), name


def test_encoded_arrays_round_trip_and_damage_is_named() -> None:
    arrays = build_arrays([Person("D110105000001", [(HOSPITALS[0], "2020-01-01", None)])])
    fields = {k.encode(): v for k, v in encode_arrays(arrays).items()}
    decoded = decode_arrays(fields, "change 4")
    for name in ARRAY_DTYPES:
        assert np.array_equal(decoded[name], arrays[name])
    del fields[b"a:st_key"]
    with pytest.raises(SnapshotError, match="change 4: array st_key is missing"):
        decode_arrays(fields, "change 4")
    fields[b"a:st_key"] = b"\x00" * 3
    with pytest.raises(SnapshotError, match="not whole"):
        decode_arrays(fields, "change 4")


def test_index_versions_only_go_up_across_snapshots() -> None:
    assert index_version(1, CHANGE_SEQ_BASE - 1) < index_version(2, 0)
    with pytest.raises(ValueError, match="change sequence"):
        index_version(1, CHANGE_SEQ_BASE)


def test_every_public_lookup_of_the_index_reads_the_overlay() -> None:
    # A lookup added to StatusIndex but not to LayeredIndex would read the
    # snapshot's arrays alone and silently ignore live changes.
    public = {
        name
        for name, value in vars(StatusIndex).items()
        if not name.startswith("_") and (callable(value) or isinstance(value, property))
    }
    layered = LayeredIndex(StatusIndex(empty_arrays(), 1))
    own = set(vars(LayeredIndex)) | set(vars(layered))
    assert public - own == set()
