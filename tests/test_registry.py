"""loader.registry: reading and validating the registry (CSV and JSON Lines)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from contract.codes import encode_institution, encode_practitioner
from contract.days import DAY_NONE, iso_to_day
from contract.errors import LoadError
from loader.registry import read_registry

HEADER = "practitioner_code,institution_code,role,registered_on,deregistered_on"
GOOD = [
    "D110105000001,H11010500001,doctor,2015-03-01,",
    "HY110105000002,P11010500001,principal,2018-01-01,2024-06-30",
    "D110105000001,H11010500002,doctor,2020-05-06,",
]


def write_csv(tmp_path: Path, rows: list[str], header: str = HEADER) -> Path:
    path = tmp_path / "registry.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def write_jsonl(tmp_path: Path, rows: list[str]) -> Path:
    """The same records as JSON Lines; an empty optional value is left out."""
    names = HEADER.split(",")
    path = tmp_path / "registry.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            record = {k: v for k, v in zip(names, row.split(","), strict=True) if v}
            out.write(json.dumps(record) + "\n")
    return path


@pytest.mark.parametrize("write", [write_csv, write_jsonl])
def test_good_registry(tmp_path: Path, write: Callable[[Path, list[str]], Path]) -> None:
    path = write(tmp_path, GOOD)
    registry = read_registry(path)
    assert len(registry) == 3
    assert registry.practitioner.tolist() == [
        encode_practitioner("D110105000001"),
        encode_practitioner("HY110105000002"),
        encode_practitioner("D110105000001"),
    ]
    assert registry.institution.tolist() == [
        encode_institution(c) for c in ("H11010500001", "P11010500001", "H11010500002")
    ]
    assert registry.registered_on.tolist() == [
        iso_to_day(d) for d in ("2015-03-01", "2018-01-01", "2020-05-06")
    ]
    assert registry.deregistered_on.tolist() == [DAY_NONE, iso_to_day("2024-06-30"), DAY_NONE]
    assert [registry.role_names[i] for i in registry.role] == ["doctor", "principal", "doctor"]
    first_line = 2 if path.suffix == ".csv" else 1
    assert registry.lines.tolist() == [first_line, first_line + 1, first_line + 2]
    assert registry.practitioners.tolist() == sorted(
        {encode_practitioner("D110105000001"), encode_practitioner("HY110105000002")}
    )


def test_deregistered_on_column_may_be_absent(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        ["D110105000001,H11010500001,doctor,2015-03-01"],
        header="practitioner_code,institution_code,role,registered_on",
    )
    assert read_registry(path).deregistered_on.tolist() == [DAY_NONE]


def test_duplicate_and_overlapping_periods_are_kept(tmp_path: Path) -> None:
    row = "D110105000001,H11010500001,doctor,2015-03-01,"
    assert len(read_registry(write_csv(tmp_path, [row, row]))) == 2


BAD_CASES = [
    # (rows, line of the bad record in CSV, field, words in the reason)
    (
        [GOOD[0], "D11010500001,H11010500001,doctor,2015-03-01,"],
        3,
        "practitioner_code",
        "'D11010500001'",
    ),
    ([GOOD[0], "D110105000001,X1101050001,doctor,2015-03-01,"], 3, "institution_code", "X11"),
    (
        [GOOD[0], GOOD[1], "D110105000003,H11010500001,doctor,2025-02-30,"],
        4,
        "registered_on",
        "real",
    ),
    (
        [GOOD[0], "D110105000003,H11010500001,doctor,2025-02-01,2025-02-01"],
        3,
        "deregistered_on",
        "not after",
    ),
    (
        [GOOD[0], "D110105000003,H11010500001,doctor,2025-02-01,2024-12-31"],
        3,
        "deregistered_on",
        "not after",
    ),
    ([GOOD[0], "D110105000003,H11010500001, ,2025-02-01,"], 3, "role", "empty"),
    ([GOOD[0], "D110105000003,H11010500001,doctor,,"], 3, "registered_on", "YYYY-MM-DD"),
]


@pytest.mark.parametrize(("rows", "line", "field", "words"), BAD_CASES)
def test_bad_record_csv(tmp_path: Path, rows: list[str], line: int, field: str, words: str) -> None:
    path = write_csv(tmp_path, rows)
    with pytest.raises(LoadError) as excinfo:
        read_registry(path)
    assert (excinfo.value.file, excinfo.value.line, excinfo.value.field) == (str(path), line, field)
    assert words in excinfo.value.reason


@pytest.mark.parametrize(("rows", "line", "field", "words"), BAD_CASES)
def test_bad_record_jsonl(
    tmp_path: Path, rows: list[str], line: int, field: str, words: str
) -> None:
    path = write_jsonl(tmp_path, rows)
    with pytest.raises(LoadError) as excinfo:
        read_registry(path)
    assert (excinfo.value.file, excinfo.value.line) == (str(path), line - 1)
    # An empty required value is simply absent from the JSON record.
    assert excinfo.value.field == field


def test_missing_column(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        ["D110105000001,doctor,2015-03-01,"],
        header="practitioner_code,role,registered_on,deregistered_on",
    )
    with pytest.raises(LoadError) as excinfo:
        read_registry(path)
    assert (excinfo.value.line, excinfo.value.field) == (1, "institution_code")


def test_ragged_row(tmp_path: Path) -> None:
    path = write_csv(tmp_path, [GOOD[0], "D110105000001,H11010500001,doctor"])
    with pytest.raises(LoadError) as excinfo:
        read_registry(path)
    assert excinfo.value.line == 3
    assert "expected 5 fields" in excinfo.value.reason


def test_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "registry.csv"
    path.write_bytes(
        (HEADER + "\n" + GOOD[0] + "\n").encode()
        + b"D110105000002,H11010500001,\xe5\x8c,2015-03-01,\n"
    )
    with pytest.raises(LoadError) as excinfo:
        read_registry(path)
    assert excinfo.value.line == 3
    assert "UTF-8" in excinfo.value.reason


def test_chinese_role_is_fine(tmp_path: Path) -> None:
    path = write_csv(tmp_path, ["D110105000001,H11010500001,医师,2015-03-01,"])
    registry = read_registry(path)
    assert registry.role_names == ("医师",)


def test_empty_registry_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="no records"):
        read_registry(write_csv(tmp_path, []))
