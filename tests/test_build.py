"""loader.build: columns -> snapshot arrays, against a plain-Python reference."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.codes import encode_institution, encode_practitioner
from contract.days import DAY_NONE, iso_to_day
from contract.domain import Status
from contract.errors import BuildError
from contract.snapshot import ARRAY_DTYPES, DAY_BITS, Arrays
from loader.build import build_arrays
from loader.registry import Registry
from loader.timeline import StatusChange

Record = tuple[int, int, int, int]  # practitioner key, institution key, from, until


def registry_of(records: Sequence[Record]) -> Registry:
    n = len(records)
    return Registry(
        file="registry.csv",
        practitioner=np.array([r[0] for r in records], dtype=np.uint64),
        institution=np.array([r[1] for r in records], dtype=np.uint64),
        role=np.zeros(n, dtype=np.int32),
        role_names=("doctor",),
        registered_on=np.array([r[2] for r in records], dtype=np.uint16),
        deregistered_on=np.array([r[3] for r in records], dtype=np.uint16),
        lines=np.arange(2, n + 2, dtype=np.int64),
    )


def reference_arrays(
    records: Sequence[Record],
    timelines: Mapping[int, Sequence[StatusChange]],
    points: Mapping[int, Sequence[tuple[int, int]]],
) -> dict[str, list[int]]:
    """The snapshot arrays, built the obvious way."""
    prac_codes = sorted({r[0] for r in records})
    inst_codes = sorted({r[1] for r in records})
    row_of = {key: row for row, key in enumerate(prac_codes)}
    ordered = sorted(records, key=lambda r: (r[0], r[2]))  # stable: ties keep file order
    offsets = [0]
    for key in prac_codes:
        offsets.append(offsets[-1] + sum(1 for r in records if r[0] == key))
    st_points = sorted(
        ((row_of[key] << DAY_BITS) | c.day, int(c.status), c.until)
        for key, changes in timelines.items()
        for c in changes
    )
    pt_points = sorted(
        ((row_of[key] << DAY_BITS) | d, total)
        for key, changes in points.items()
        for d, total in changes
    )
    return {
        "prac_codes": prac_codes,
        "reg_offsets": offsets,
        "reg_inst": [inst_codes.index(r[1]) for r in ordered],
        "reg_from": [r[2] for r in ordered],
        "reg_until": [r[3] for r in ordered],
        "inst_codes": inst_codes,
        "st_key": [p[0] for p in st_points],
        "st_status": [p[1] for p in st_points],
        "st_until": [p[2] for p in st_points],
        "pt_key": [p[0] for p in pt_points],
        "pt_points": [p[1] for p in pt_points],
    }


def as_lists(arrays: Arrays) -> dict[str, list[int]]:
    return {name: arrays[name].tolist() for name in ARRAY_DTYPES}


P1, P2, P3 = (encode_practitioner(c) for c in ("D110105000001", "HY110105000002", "D110105000003"))
H1, H2, PH = (encode_institution(c) for c in ("H11010500001", "H11010500002", "P11010500001"))


def test_small_snapshot() -> None:
    records = [
        (P3, H2, 300, DAY_NONE),
        (P1, H2, 200, 250),
        (P2, PH, 100, DAY_NONE),
        (P1, H1, 100, DAY_NONE),
    ]
    timelines = {P3: [StatusChange(400, Status.SUSPENDED, 430), StatusChange(431, Status.ACTIVE)]}
    points = {P1: [(150, 3), (160, 7)]}
    arrays = build_arrays(registry_of(records), timelines, points)
    for name, dtype in ARRAY_DTYPES.items():
        assert arrays[name].dtype == np.dtype(dtype), name
    # Keys sort by letters first: D110105000001, D110105000003, HY110105000002.
    assert as_lists(arrays) == {
        "prac_codes": [P1, P3, P2],
        "reg_offsets": [0, 2, 3, 4],
        "reg_inst": [0, 1, 1, 2],  # P1: H1 (from 100), then H2 (from 200)
        "reg_from": [100, 200, 300, 100],
        "reg_until": [DAY_NONE, 250, DAY_NONE, DAY_NONE],
        "inst_codes": [H1, H2, PH],
        "st_key": [(1 << 16) | 400, (1 << 16) | 431],
        "st_status": [Status.SUSPENDED, Status.ACTIVE],
        "st_until": [430, DAY_NONE],
        "pt_key": [150, 160],
        "pt_points": [3, 7],
    }


def test_no_timelines_no_points() -> None:
    arrays = build_arrays(registry_of([(P1, H1, 100, DAY_NONE)]), {})
    assert len(arrays["st_key"]) == 0
    assert len(arrays["pt_key"]) == 0
    assert arrays["reg_offsets"].tolist() == [0, 1]


def test_timeline_of_unregistered_practitioner_is_refused() -> None:
    with pytest.raises(BuildError, match="D110105000003"):
        build_arrays(
            registry_of([(P1, H1, 100, DAY_NONE)]), {P3: [StatusChange(5, Status.TERMINATED)]}
        )
    with pytest.raises(BuildError, match="D110105000003"):
        build_arrays(registry_of([(P1, H1, 100, DAY_NONE)]), {}, {P3: [(5, 1)]})


@pytest.mark.parametrize(
    "changes",
    [
        [StatusChange(10, Status.TERMINATED), StatusChange(10, Status.ACTIVE)],
        [StatusChange(10, Status.TERMINATED), StatusChange(9, Status.ACTIVE)],
        [StatusChange(DAY_NONE, Status.TERMINATED)],
        [StatusChange(10, Status.UNSPECIFIED)],
        [StatusChange(10, Status.TERMINATED, 20)],
    ],
)
def test_malformed_timelines_are_refused(changes: list[StatusChange]) -> None:
    with pytest.raises(BuildError):
        build_arrays(registry_of([(P1, H1, 100, DAY_NONE)]), {P1: changes})


def test_points_out_of_range_are_refused() -> None:
    with pytest.raises(BuildError):
        build_arrays(registry_of([(P1, H1, 100, DAY_NONE)]), {}, {P1: [(5, 70000)]})


_keys = st.sampled_from(
    [P1, P2, P3, encode_practitioner("ZZ999999999999"), encode_practitioner("A000000000000")]
)
_insts = st.sampled_from([H1, H2, PH, encode_institution("Z99999999999")])
_records = st.builds(
    lambda p, i, start, length: (p, i, start, DAY_NONE if length is None else start + length),
    _keys,
    _insts,
    st.integers(0, 60),
    st.one_of(st.none(), st.integers(1, 30)),
)


@st.composite
def _snapshots(
    draw: st.DrawFn,
) -> tuple[list[Record], dict[int, list[StatusChange]], dict[int, list[tuple[int, int]]]]:
    records = draw(st.lists(_records, min_size=1, max_size=25))
    keys = sorted({r[0] for r in records})
    timelines = {}
    points = {}
    for key in keys:
        days = sorted(draw(st.sets(st.integers(0, 100), max_size=4)))
        statuses = draw(
            st.lists(
                st.sampled_from([Status.WARNED, Status.TERMINATED, Status.ACTIVE]),
                min_size=len(days),
                max_size=len(days),
            )
        )
        if days:
            timelines[key] = [StatusChange(d, s) for d, s in zip(days, statuses, strict=True)]
        point_days = sorted(draw(st.sets(st.integers(0, 100), max_size=3)))
        if point_days:
            points[key] = [(d, draw(st.integers(0, 30))) for d in point_days]
    return records, timelines, points


@settings(max_examples=150, deadline=None)
@given(_snapshots())
def test_build_equals_reference(
    case: tuple[list[Record], dict[int, list[StatusChange]], dict[int, list[tuple[int, int]]]],
) -> None:
    records, timelines, points = case
    arrays = build_arrays(registry_of(records), timelines, points)
    assert as_lists(arrays) == reference_arrays(records, timelines, points)


def test_file_dates_end_to_end() -> None:
    start = iso_to_day("2025-01-01")
    arrays = build_arrays(registry_of([(P1, H1, start, DAY_NONE)]), {})
    assert arrays["reg_from"].tolist() == [start]
