"""loader.status_feed: validating the status feed and painting timelines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from contract.codes import encode_practitioner
from contract.days import DAY_NONE, iso_to_day
from contract.domain import Status
from contract.errors import LoadError
from loader.status_feed import feed_timelines, read_status_feed
from loader.timeline import StatusChange

HEADER = "practitioner_code,status,effective_from,effective_until,reference"
D1, D2, HY = "D110105000001", "D110105000002", "HY110105000003"
REGISTERED = np.array(sorted(encode_practitioner(c) for c in (D1, D2, HY)), dtype=np.uint64)


def day(text: str) -> int:
    return iso_to_day(text)


def write_csv(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "status.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def write_jsonl(tmp_path: Path, rows: list[str]) -> Path:
    names = HEADER.split(",")
    path = tmp_path / "status.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            record = {k: v for k, v in zip(names, row.split(","), strict=True) if v}
            out.write(json.dumps(record) + "\n")
    return path


def test_good_feed_and_timelines(tmp_path: Path) -> None:
    rows = [
        f"{D1},SUSPENDED,2025-03-01,2025-05-31,R-1",
        f"{D2},TERMINATED,2024-01-10,,R-2",
        f"{D2},ACTIVE,2025-01-10,,R-3",
        f"{HY},WARNED,2025-02-01,2025-12-31,R-4",
    ]
    for path in (write_csv(tmp_path, rows), write_jsonl(tmp_path, rows)):
        feed = read_status_feed(path, REGISTERED)
        assert len(feed) == 4
        assert feed.status.tolist() == [
            Status.SUSPENDED,
            Status.TERMINATED,
            Status.ACTIVE,
            Status.WARNED,
        ]
        assert feed.effective_until.tolist()[1] == DAY_NONE
        assert feed.reference.to_pylist() == ["R-1", "R-2", "R-3", "R-4"]
        assert feed_timelines(feed) == {
            encode_practitioner(D1): [
                StatusChange(day("2025-03-01"), Status.SUSPENDED, day("2025-05-31")),
                StatusChange(day("2025-06-01"), Status.ACTIVE),
            ],
            encode_practitioner(D2): [
                StatusChange(day("2024-01-10"), Status.TERMINATED),
                StatusChange(day("2025-01-10"), Status.ACTIVE),
            ],
            encode_practitioner(HY): [
                StatusChange(day("2025-02-01"), Status.WARNED),
                StatusChange(day("2026-01-01"), Status.ACTIVE),
            ],
        }


def test_records_are_painted_in_order_of_start_not_of_file(tmp_path: Path) -> None:
    rows = [
        f"{D1},SUSPENDED,2025-03-01,2025-03-31,R-2",  # inside the termination
        f"{D1},TERMINATED,2025-01-01,,R-1",
    ]
    timelines = feed_timelines(read_status_feed(write_csv(tmp_path, rows), REGISTERED))
    assert timelines[encode_practitioner(D1)] == [
        StatusChange(day("2025-01-01"), Status.TERMINATED),
        StatusChange(day("2025-03-01"), Status.SUSPENDED, day("2025-03-31")),
        StatusChange(day("2025-04-01"), Status.TERMINATED),
    ]


def test_only_active_records_give_no_timeline(tmp_path: Path) -> None:
    feed = read_status_feed(write_csv(tmp_path, [f"{D1},ACTIVE,2025-01-01,,R"]), REGISTERED)
    assert feed_timelines(feed) == {}


def test_empty_feed(tmp_path: Path) -> None:
    feed = read_status_feed(write_csv(tmp_path, []), REGISTERED)
    assert len(feed) == 0
    assert feed_timelines(feed) == {}


BAD_CASES = [
    # (rows, CSV line, field, words in the reason)
    ([f"{D1},SUSPENDED,2025-03-01,,R"], 2, "effective_until", "end date"),
    (
        [f"{D2},ACTIVE,2025-01-01,,R", f"{D1},SUSPENDED,2025-03-01,2025-02-28,R"],
        3,
        "effective_until",
        "before",
    ),
    ([f"{D1},SUSPENDED,2025-02-30,2025-03-31,R"], 2, "effective_from", "real calendar date"),
    ([f"{D1},NOT_REGISTERED,2025-01-01,,R"], 2, "status", "not one of"),
    ([f"{D1},suspended,2025-01-01,2025-02-01,R"], 2, "status", "not one of"),
    ([f"{D1},TERMINATED,2025-01-01,,"], 2, "reference", ""),
    (
        [f"{D2},ACTIVE,2025-01-01,,R", "D110105000009,TERMINATED,2025-01-01,,R"],
        3,
        "practitioner_code",
        "unknown practitioner D110105000009",
    ),
    (
        ["D11010500000X,TERMINATED,2025-01-01,,R"],
        2,
        "practitioner_code",
        "invalid practitioner code",
    ),
]


@pytest.mark.parametrize(("rows", "line", "field", "words"), BAD_CASES)
def test_bad_record_csv(tmp_path: Path, rows: list[str], line: int, field: str, words: str) -> None:
    path = write_csv(tmp_path, rows)
    with pytest.raises(LoadError) as excinfo:
        read_status_feed(path, REGISTERED)
    assert (excinfo.value.file, excinfo.value.line, excinfo.value.field) == (str(path), line, field)
    assert words in excinfo.value.reason


@pytest.mark.parametrize(("rows", "line", "field", "words"), BAD_CASES)
def test_bad_record_jsonl(
    tmp_path: Path, rows: list[str], line: int, field: str, words: str
) -> None:
    path = write_jsonl(tmp_path, rows)
    with pytest.raises(LoadError) as excinfo:
        read_status_feed(path, REGISTERED)
    assert (excinfo.value.file, excinfo.value.line, excinfo.value.field) == (
        str(path),
        line - 1,
        field,
    )


def test_conflicting_records_name_both_lines(tmp_path: Path) -> None:
    rows = [
        f"{D1},SUSPENDED,2025-03-01,2025-03-31,R-1",
        f"{D2},TERMINATED,2025-03-01,,R-2",  # another practitioner: no conflict
        f"{D1},TERMINATED,2025-01-01,,R-3",
        f"{D1},TERMINATED,2025-03-01,,R-4",
    ]
    with pytest.raises(LoadError) as excinfo:
        read_status_feed(write_csv(tmp_path, rows), REGISTERED)
    assert (excinfo.value.line, excinfo.value.field) == (5, "effective_from")
    assert "conflicting" in excinfo.value.reason
    assert "lines 2 and 5" in excinfo.value.reason


def test_identical_records_conflict_too(tmp_path: Path) -> None:
    row = f"{D1},TERMINATED,2025-01-01,,R-1"
    with pytest.raises(LoadError, match=r"conflicting.*lines 2 and 3"):
        read_status_feed(write_csv(tmp_path, [row, row]), REGISTERED)


def test_first_conflict_in_file_order_is_reported(tmp_path: Path) -> None:
    rows = [
        f"{D2},TERMINATED,2025-03-01,,R-1",
        f"{D1},TERMINATED,2025-03-01,,R-2",
        f"{D1},TERMINATED,2025-03-01,,R-3",
        f"{D2},TERMINATED,2025-03-01,,R-4",
    ]
    with pytest.raises(LoadError, match="lines 3 and 4"):
        read_status_feed(write_csv(tmp_path, rows), REGISTERED)


def test_unknown_practitioner_with_empty_registry(tmp_path: Path) -> None:
    path = write_csv(tmp_path, [f"{D1},TERMINATED,2025-01-01,,R"])
    with pytest.raises(LoadError, match="unknown practitioner"):
        read_status_feed(path, np.zeros(0, dtype=np.uint64))
