from __future__ import annotations

import numpy as np
import pytest

from contract import codes
from contract.days import DAY_NONE
from contract.domain import Status
from contract.errors import SnapshotError
from contract.snapshot import empty_arrays
from gateway.index import IndexHolder, StatusIndex
from tests.factory import Person, build_arrays, build_index, day

H1, H2 = "H11010500001", "H11010500002"
PEOPLE = [
    Person("D110105000001", [(H1, "2020-01-01", None), (H2, "2024-01-01", "2025-01-01")]),
    Person(
        "D110105000003",
        [(H1, "2020-01-01", None)],
        [("2025-06-01", Status.SUSPENDED, "2025-08-31"), ("2025-09-01", Status.ACTIVE, None)],
        [("2025-03-01", 4), ("2025-06-01", 9), ("2026-01-01", 0)],
    ),
    Person(
        "HY110105000001",
        [(H2, "2021-05-05", "2023-01-01")],
        [("2022-01-01", Status.TERMINATED, None)],
    ),
]


def keys(*code_list: str) -> np.ndarray:
    return np.array([codes.try_encode_practitioner(c) for c in code_list], dtype=np.int64)


def days_of(*iso: str) -> np.ndarray:
    return np.array([day(d) for d in iso], dtype=np.int64)


@pytest.fixture
def index() -> StatusIndex:
    return build_index(PEOPLE, version=3)


def test_rows_find_known_codes_only(index: StatusIndex) -> None:
    rows = index.rows(keys("D110105000001", "D110105000002", "HY110105000001", "bad"))
    assert rows.tolist()[0] >= 0 and rows.tolist()[2] >= 0
    assert rows.tolist()[1] == rows.tolist()[3] == -1


def test_registration_intervals_are_half_open(index: StatusIndex) -> None:
    h2 = index.institution_id(codes.encode_institution(H2))
    rows = index.rows(keys(*["D110105000001"] * 4))
    found = index.lookup(rows, days_of("2023-12-31", "2024-01-01", "2024-12-31", "2025-01-01"), h2)
    assert found.at_institution.tolist() == [False, True, True, False]
    assert found.registered.tolist() == [True] * 4  # H1 throughout


def test_status_on_the_service_date(index: StatusIndex) -> None:
    rows = index.rows(keys(*["D110105000003"] * 4))
    found = index.lookup(rows, days_of("2025-05-31", "2025-06-01", "2025-08-31", "2025-09-01"), -1)
    assert found.status.tolist() == [
        Status.ACTIVE,
        Status.SUSPENDED,
        Status.SUSPENDED,
        Status.ACTIVE,
    ]
    assert found.until.tolist() == [DAY_NONE, day("2025-08-31"), day("2025-08-31"), DAY_NONE]


def test_sanctions_outlive_registration_and_unregistered_is_not_registered(
    index: StatusIndex,
) -> None:
    rows = index.rows(keys("HY110105000001", "HY110105000001", "D110105000002"))
    found = index.lookup(rows, days_of("2021-06-01", "2024-06-01", "2024-06-01"), -1)
    assert found.status.tolist() == [Status.ACTIVE, Status.TERMINATED, Status.NOT_REGISTERED]
    assert found.registered.tolist() == [True, False, False]
    assert found.found.tolist() == [True, True, False]


def test_institutions_and_points_on_a_day(index: StatusIndex) -> None:
    row = int(index.rows(keys("D110105000001"))[0])
    assert [codes.decode_institution(k) for k in index.institutions_on(row, day("2024-06-01"))] == [
        H1,
        H2,
    ]
    row3 = int(index.rows(keys("D110105000003"))[0])
    assert index.points_on(row3, day("2025-02-28")) == 0
    assert index.points_on(row3, day("2025-07-01")) == 9
    assert index.points_on(row3, day("2026-02-01")) == 0
    assert index.points_on(-1, day("2025-07-01")) is None


def test_points_of_an_earlier_year_read_as_zero() -> None:
    people = [Person("D110105000009", [(H1, "2020-01-01", None)], points=[("2024-05-01", 7)])]
    index = build_index(people)
    assert index.points_on(0, day("2024-12-31")) == 7
    assert index.points_on(0, day("2025-01-01")) == 0


def test_an_empty_index_finds_no_one() -> None:
    index = StatusIndex(empty_arrays(), 1)
    found = index.lookup(index.rows(keys("D110105000001")), days_of("2025-01-01"), -1)
    assert found.found.tolist() == [False]
    assert found.status.tolist() == [Status.NOT_REGISTERED]


def test_inconsistent_arrays_are_refused() -> None:
    arrays = build_arrays(PEOPLE)
    arrays["prac_codes"] = arrays["prac_codes"][::-1].copy()
    with pytest.raises(SnapshotError, match="prac_codes"):
        StatusIndex(arrays, 1)


def test_the_holder_only_moves_forward(index: StatusIndex) -> None:
    holder = IndexHolder()
    assert holder.version == 0
    assert holder.swap(index)
    assert not holder.swap(build_index(PEOPLE, version=2))
    assert holder.version == 3
