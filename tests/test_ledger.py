"""Reading the scoring ledger: good CSV and JSON Lines files, and every kind
of bad record refused with its file, line, field and reason."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from contract.codes import encode_institution, encode_practitioner
from contract.days import iso_to_day
from contract.domain import Status
from contract.errors import LoadError
from loader.ledger import parse_ledger, read_ledger
from loader.points import NO_CASE, NO_EVENT, Kind, Ledger, RegistrationStarts, derive_statuses
from loader.policy import load_policy
from loader.timeline import StatusChange

HEADER = (
    "event_id,practitioner_code,institution_code,kind,points,"
    "effective_on,suspension_months,reference"
)
GOOD_CSV = f"""{HEADER}
E1,D110105000123,H11010500001,SCORE,4,2024-01-31,,decision 12
E2,HY110105000789,P11010500002,SCORE,9,2024-03-10,2,
E3,D110105000123,,REPAIR,3,2024-05-01,,

E4,D110105000123,,SHORTEN,,2024-06-01,,
E5,HY110105000789,,REVOKE,,2024-07-01,,E2
"""
NATIONAL = load_policy("national")
JIANGXI = load_policy("jiangxi")


def csv_ledger(text: str, policy: str = "national") -> Ledger:
    return parse_ledger(text.encode(), "ledger.csv", load_policy(policy), file_format="csv")


def test_good_csv() -> None:
    ledger = csv_ledger(GOOD_CSV)
    assert ledger.file == "ledger.csv"
    assert list(ledger.event_id) == ["E1", "E2", "E3", "E4", "E5"]
    assert ledger.line.tolist() == [2, 3, 4, 6, 7]  # the blank line 5 still counts
    assert ledger.practitioner.tolist() == [
        encode_practitioner(c)
        for c in (
            "D110105000123",
            "HY110105000789",
            "D110105000123",
            "D110105000123",
            "HY110105000789",
        )
    ]
    assert ledger.institution.tolist() == [
        encode_institution("H11010500001"),
        encode_institution("P11010500002"),
        0,
        0,
        0,
    ]
    assert ledger.kind.tolist() == [Kind.SCORE, Kind.SCORE, Kind.REPAIR, Kind.SHORTEN, Kind.REVOKE]
    assert ledger.points.tolist() == [4, 9, 3, 0, 0]
    assert ledger.effective_on.tolist() == [
        iso_to_day(d)
        for d in ("2024-01-31", "2024-03-10", "2024-05-01", "2024-06-01", "2024-07-01")
    ]
    assert ledger.suspension_months.tolist() == [0, 2, 0, 0, 0]
    assert list(ledger.reference) == ["decision 12", "", "", "", "E2"]
    assert ledger.revokes.tolist() == [NO_EVENT, NO_EVENT, NO_EVENT, NO_EVENT, 1]
    assert repr(ledger) == "Ledger('ledger.csv', 5 rows)"


def test_jsonl_reads_like_csv_integers_allowed(tmp_path: Path) -> None:
    records: list[dict[str, object]] = [
        {
            "event_id": "E1",
            "practitioner_code": "D110105000123",
            "institution_code": "H11010500001",
            "kind": "SCORE",
            "points": 4,
            "effective_on": "2024-01-31",
            "reference": "decision 12",
        },
        {
            "event_id": "E2",
            "practitioner_code": "HY110105000789",
            "institution_code": "P11010500002",
            "kind": "SCORE",
            "points": 9,
            "effective_on": "2024-03-10",
            "suspension_months": 2,
        },
        {
            "event_id": "E3",
            "practitioner_code": "D110105000123",
            "institution_code": None,
            "kind": "REPAIR",
            "points": "3",
            "effective_on": "2024-05-01",
        },
    ]
    path = tmp_path / "ledger.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    with pytest.raises(LoadError) as err:
        read_ledger(path, NATIONAL)
    # institution_code is a required field; JSON null is "missing".
    assert (err.value.line, err.value.field) == (3, "institution_code")
    records[2]["institution_code"] = ""
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    ledger = read_ledger(path, NATIONAL)
    csv = csv_ledger("\n".join(GOOD_CSV.splitlines()[:4]) + "\n")
    for name in (
        "practitioner",
        "institution",
        "kind",
        "points",
        "effective_on",
        "suspension_months",
        "revokes",
    ):
        assert getattr(ledger, name).tolist() == getattr(csv, name).tolist(), name
    assert ledger.line.tolist() == [1, 2, 3]


def test_read_from_a_csv_file(tmp_path: Path) -> None:
    path = tmp_path / "ledger.csv"
    path.write_text(GOOD_CSV, encoding="utf-8")
    assert len(read_ledger(path, NATIONAL)) == 5


def test_unknown_file_type(tmp_path: Path) -> None:
    path = tmp_path / "ledger.xlsx"
    path.write_text(GOOD_CSV, encoding="utf-8")
    with pytest.raises(LoadError, match="unknown file type"):
        read_ledger(path, NATIONAL)


def test_empty_ledger() -> None:
    assert len(csv_ledger(HEADER + "\n")) == 0


def row(**fields: str) -> str:
    base = {
        "event_id": "E9",
        "practitioner_code": "D110105000123",
        "institution_code": "H11010500001",
        "kind": "SCORE",
        "points": "3",
        "effective_on": "2024-02-01",
        "suspension_months": "",
        "reference": "",
    }
    base.update(fields)
    return ",".join(base.values())


BAD = [
    (
        "bad practitioner code",
        row(practitioner_code="D11010500012"),
        "practitioner_code",
        "'D11010500012'",
    ),
    (
        "lowercase practitioner code",
        row(practitioner_code="d110105000123"),
        "practitioner_code",
        "'d110105000123'",
    ),
    (
        "bad institution code",
        row(institution_code="X1101050000"),
        "institution_code",
        "'X1101050000'",
    ),
    (
        "SCORE without institution",
        row(institution_code=""),
        "institution_code",
        "required on a SCORE event",
    ),
    ("bad date", row(effective_on="2024/02/01"), "effective_on", "'2024/02/01'"),
    ("unreal date", row(effective_on="2023-02-29"), "effective_on", "'2023-02-29'"),
    ("unknown kind", row(kind="FINE"), "kind", "'FINE'"),
    ("SCORE of 0", row(points="0"), "points", "SCORE points must be 1..12"),
    (
        "SCORE of 13",
        row(points="13"),
        "points",
        "SCORE points must be 1..12 (policy 'national'), got '13'",
    ),
    ("SCORE without points", row(points=""), "points", "SCORE points must be 1..12"),
    ("points not a number", row(points="three"), "points", "'three'"),
    ("REPAIR of 0", row(kind="REPAIR", points="0"), "points", "REPAIR points must be 1..65535"),
    ("months 7", row(suspension_months="7"), "suspension_months", "must be 1..6 months"),
    ("months 0", row(suspension_months="0"), "suspension_months", "must be 1..6 months"),
    ("months not a number", row(suspension_months="x"), "suspension_months", "'x'"),
    ("empty event_id", row(event_id=""), "event_id", "must be non-empty"),
    ("event_id with a space", row(event_id="E9 "), "event_id", "without surrounding spaces"),
    (
        "duplicate event_id",
        row(event_id="E1"),
        "event_id",
        "duplicate event_id 'E1' (first on line 2)",
    ),
    (
        "REVOKE of an unknown event",
        row(kind="REVOKE", reference="E77"),
        "reference",
        "REVOKE of unknown event_id 'E77'",
    ),
    (
        "REVOKE without reference",
        row(kind="REVOKE", reference=""),
        "reference",
        "must name the event_id it revokes",
    ),
    (
        "REVOKE of another practitioner's event",
        row(kind="REVOKE", reference="E1", practitioner_code="D110105000999"),
        "reference",
        "for another practitioner",
    ),
    ("too few fields", "E9,D110105000123,H11010500001", "", "8"),
]


@pytest.mark.parametrize(("bad", "field", "reason"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_records_name_file_line_and_field(bad: str, field: str, reason: str) -> None:
    text = f"{HEADER}\n{row(event_id='E1')}\n{bad}\n{row(event_id='E10')}\n"
    with pytest.raises(LoadError) as err:
        csv_ledger(text)
    e = err.value
    assert (e.file, e.line, e.field) == ("ledger.csv", 3, field)
    assert reason in e.reason
    assert str(e).startswith(f"ledger.csv:3: field {field!r}")


def test_missing_required_column() -> None:
    with pytest.raises(LoadError) as err:
        csv_ledger("event_id,practitioner_code,kind,points,effective_on\n")
    assert (err.value.line, err.value.field) == (1, "institution_code")


def test_optional_columns_may_be_absent() -> None:
    ledger = csv_ledger(
        "event_id,practitioner_code,institution_code,kind,effective_on,points\n"
        "E1,D110105000123,H11010500001,SCORE,2024-01-01,5\n"
    )
    assert ledger.points.tolist() == [5] and list(ledger.reference) == [""]


def test_table_policy_reads_suspension_months_as_a_decision() -> None:
    # Under Jiangxi the table gives the length, but a value on a SCORE says
    # the authority decided a new suspension (SPEC §7: thresholds trigger
    # when crossed); it is checked like the national one.
    text = f"{HEADER}\n{row(suspension_months='9')}\n"
    for policy in ("national", "jiangxi"):
        with pytest.raises(LoadError) as err:
            csv_ledger(text, policy)
        assert (err.value.line, err.value.field) == (2, "suspension_months")
    text = f"{HEADER}\n{row(suspension_months='2')}\n"
    assert csv_ledger(text, "jiangxi").suspension_months.tolist() == [2]


# --- case_id (one handling, 一次) -------------------------------------------

CASE_HEADER = f"{HEADER},case_id"


def test_old_ledgers_without_case_id_load_as_before() -> None:
    ledger = csv_ledger(GOOD_CSV)
    assert ledger.case.tolist() == [NO_CASE] * 5
    assert list(ledger.case_names) == []


def test_case_ids_are_read() -> None:
    text = (
        f"{CASE_HEADER}\n"
        f"{row(event_id='E1')},K-1\n"
        f"{row(event_id='E2')},\n"
        f"{row(event_id='E3', practitioner_code='HY110105000789')},K-2\n"
        f"{row(event_id='E4')},K-1\n"
    )
    ledger = csv_ledger(text)
    names = list(ledger.case_names)
    assert [names[c] if c != NO_CASE else "" for c in ledger.case.tolist()] == [
        "K-1",
        "",
        "K-2",
        "K-1",
    ]


def test_case_ids_in_json_lines_may_be_numbers_or_absent(tmp_path: Path) -> None:
    base = {
        "practitioner_code": "D110105000123",
        "institution_code": "H11010500001",
        "kind": "SCORE",
        "points": 3,
        "effective_on": "2024-02-01",
    }
    records = [
        {**base, "event_id": "E1", "case_id": 7},
        {**base, "event_id": "E2"},
        {**base, "event_id": "E3", "case_id": "7"},
    ]
    path = tmp_path / "ledger.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    ledger = read_ledger(path, NATIONAL)
    case = ledger.case.tolist()
    assert case[1] == NO_CASE and case[0] == case[2] != NO_CASE


@pytest.mark.parametrize(
    ("rows", "line", "reason"),
    [
        (
            [
                (row(event_id="E1"), "K1"),
                (row(event_id="E2"), "K2"),
                (row(event_id="E3", practitioner_code="HY110105000789"), "K1"),
            ],
            4,
            "case 'K1' is for D110105000123 (line 2), not HY110105000789: "
            "one case, one practitioner",
        ),
        ([(row(event_id="E1"), "K1"), (row(event_id="E2"), " K1")], 3, "surrounding spaces"),
    ],
    ids=["two-practitioners", "surrounding-spaces"],
)
def test_bad_case_ids_name_file_line_and_field(
    rows: list[tuple[str, str]], line: int, reason: str
) -> None:
    text = f"{CASE_HEADER}\n" + "".join(f"{r},{case}\n" for r, case in rows)
    with pytest.raises(LoadError) as err:
        csv_ledger(text)
    e = err.value
    assert (e.file, e.line, e.field) == ("ledger.csv", line, "case_id")
    assert reason in e.reason
    assert str(e).startswith(f"ledger.csv:{line}: field 'case_id': ")


def test_one_case_of_12_points_bars_for_3_years() -> None:
    """Through the file: a 7 + 5 case_id is 一次性记满 (3 years), two cases are not."""
    registry = RegistrationStarts(
        "registry.csv",
        np.array([encode_practitioner("D110105000123")], dtype=np.uint64),
        np.array([iso_to_day("2025-06-01")], dtype=np.uint16),
        np.array([2], dtype=np.int64),
    )

    def ledger(second_case: str) -> Ledger:
        return csv_ledger(
            f"{CASE_HEADER}\n"
            f"{row(event_id='E1', points='7')},K1\n"
            f"{row(event_id='E2', points='5')},{second_case}\n"
        )

    result = derive_statuses(ledger("K2"), NATIONAL, registry)
    assert result.status_changes(encode_practitioner("D110105000123"))[-1] == StatusChange(
        iso_to_day("2025-06-01"), Status.ACTIVE
    )
    with pytest.raises(LoadError) as err:
        derive_statuses(ledger("K1"), NATIONAL, registry)
    assert "3-year bar (一次性记满: 12 points in one case, K1)" in err.value.reason


def test_points_and_months_are_ignored_on_shorten_and_revoke() -> None:
    text = (
        f"{HEADER}\n{row(event_id='E1')}\n"
        f"{row(event_id='E2', kind='SHORTEN', points='3', institution_code='')}\n"
        f"{row(event_id='E3', kind='REVOKE', points='3', reference='E1')}\n"
    )
    ledger = csv_ledger(text)
    assert ledger.points.tolist() == [3, 0, 0]
    assert ledger.revokes.tolist() == [NO_EVENT, NO_EVENT, 0]


def test_revoke_cycle_is_refused_at_read_time() -> None:
    text = (
        f"{HEADER}\n{row(event_id='V1', kind='REVOKE', reference='V2')}\n"
        f"{row(event_id='V2', kind='REVOKE', reference='V1')}\n"
    )
    with pytest.raises(LoadError) as err:
        csv_ledger(text)
    assert (err.value.line, err.value.field) == (2, "reference")
    assert "REVOKE cycle: V1 -> V2 -> V1" in err.value.reason


def test_columns_have_the_dtypes_the_engine_expects() -> None:
    # Not a timing test: checks the columns stay numpy arrays of the right
    # dtypes (what the engine's vectorised grouping relies on).
    ledger = csv_ledger(GOOD_CSV)
    assert ledger.practitioner.dtype == np.uint64
    assert ledger.effective_on.dtype == np.uint16
    assert ledger.points.dtype == np.uint16
    assert ledger.kind.dtype == np.uint8
    assert ledger.suspension_months.dtype == np.uint8
    assert ledger.revokes.dtype == np.int64


def test_statuses_from_a_ledger_file_and_a_registry_file(tmp_path: Path) -> None:
    from loader.registry import read_registry

    ledger = tmp_path / "ledger.csv"
    ledger.write_text(
        f"{HEADER}\n"
        "E1,D110105000123,H11010500001,SCORE,12,2024-02-01,,\n"
        "E2,HY110105000789,P11010500002,SCORE,9,2024-03-10,2,\n",
        encoding="utf-8",
    )
    registry = tmp_path / "registry.csv"
    registry.write_text(
        "practitioner_code,institution_code,role,registered_on,deregistered_on\n"
        "D110105000123,H11010500001,doctor,2020-01-01,\n"
        "HY110105000789,P11010500002,pharmacist,2020-01-01,\n"
        "D110105000123,H11010500003,doctor,2027-03-01,\n",
        encoding="utf-8",
    )
    starts = RegistrationStarts.from_registry(read_registry(registry))
    result = derive_statuses(read_ledger(ledger, NATIONAL), NATIONAL, starts)
    d = iso_to_day
    assert result.timelines()[encode_practitioner("D110105000123")] == [
        StatusChange(d("2024-02-01"), Status.TERMINATED),
        StatusChange(d("2027-03-01"), Status.ACTIVE),
    ]
    registry.write_text(
        "practitioner_code,institution_code,role,registered_on,deregistered_on\n"
        "D110105000123,H11010500003,doctor,2026-01-31,\n",
        encoding="utf-8",
    )
    with pytest.raises(LoadError) as err:
        starts = RegistrationStarts.from_registry(read_registry(registry))
        derive_statuses(read_ledger(ledger, NATIONAL), NATIONAL, starts)
    assert (err.value.file, err.value.line, err.value.field) == (
        str(registry),
        2,
        "registered_on",
    )
    assert "3-year bar (一次性记满" in err.value.reason
