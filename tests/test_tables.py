"""loader.tables (reading CSV / JSON Lines with exact line numbers) and
loader.columns (the vectorised validators); the validators and the contract's
vectorised encodings they use are checked against the scalar ones of
contract.codes and contract.days."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.codes import (
    encode_institution,
    encode_institutions_array,
    encode_practitioner,
    encode_practitioners_array,
    try_encode_practitioner,
)
from contract.days import DAY_NONE, DateError, date_to_day, days_from_civil, iso_to_day, real_dates
from contract.errors import InvalidCodeError, LoadError
from loader.columns import (
    day_numbers,
    enum_values,
    institution_keys,
    integers,
    nonempty_strings,
    practitioner_keys,
)
from loader.tables import Table, detect_format, parse_table, read_table, show_value


def csv_table(
    text: str | bytes, required: Sequence[str] = ("a", "b"), optional: Sequence[str] = ()
) -> Table:
    data = text.encode() if isinstance(text, str) else text
    return parse_table(data, "in.csv", required, optional, file_format="csv")


def jsonl_table(
    text: str | bytes, required: Sequence[str] = ("a", "b"), optional: Sequence[str] = ()
) -> Table:
    data = text.encode() if isinstance(text, str) else text
    return parse_table(data, "in.jsonl", required, optional, file_format="jsonl")


def values(table: Table, name: str) -> list[str]:
    return [str(v) for v in table.column(name).to_pylist()]


def one_column(name: str, items: list[str]) -> Table:
    """A table of one column, record i on line i + 2, as a CSV reader would give."""
    return Table("t.csv", {name: pa.chunked_array([pa.array(items, pa.string())])}, lines(items))


def lines(items: list[str]) -> npt.NDArray[np.int64]:
    return np.arange(2, len(items) + 2, dtype=np.int64)


def load_error(excinfo: pytest.ExceptionInfo[LoadError]) -> tuple[str, int, str]:
    return excinfo.value.file, excinfo.value.line, excinfo.value.field


# --- reading CSV ---------------------------------------------------------------


def test_csv_values_and_lines() -> None:
    table = csv_table("a,b,extra\n1,2,x\n3,4,y\n")
    assert values(table, "a") == ["1", "3"]
    assert values(table, "b") == ["2", "4"]
    assert table.lines.tolist() == [2, 3]
    assert "extra" not in table.columns


def test_csv_blank_lines_are_skipped_and_counted() -> None:
    table = csv_table("a,b\n1,2\n\n\n3,4\r\n\r\n5,6\n\n\n")
    assert values(table, "a") == ["1", "3", "5"]
    assert table.lines.tolist() == [2, 5, 7]


def test_csv_crlf_bom_and_spaced_header() -> None:
    table = csv_table(b"\xef\xbb\xbf a , b \r\n1,2\r\n3,4\r\n")
    assert values(table, "a") == ["1", "3"]
    assert table.lines.tolist() == [2, 3]


def test_csv_quoted_values_keep_commas_and_spaces() -> None:
    table = csv_table('a,b\n"x,y", z \n')
    assert values(table, "a") == ["x,y"]
    assert values(table, "b") == [" z "]


def test_csv_header_only_and_no_final_newline() -> None:
    assert len(csv_table("a,b\n")) == 0
    assert len(csv_table("a,b")) == 0
    table = csv_table("a,b\n1,2")
    assert table.lines.tolist() == [2]


def test_csv_optional_column_absent_reads_empty() -> None:
    table = csv_table("a,b\n1,2\n", optional=("c",))
    assert values(table, "c") == [""]


def test_csv_missing_required_column_names_it_on_line_1() -> None:
    with pytest.raises(LoadError) as excinfo:
        csv_table("a,c\n1,2\n")
    assert load_error(excinfo) == ("in.csv", 1, "b")
    assert "missing" in str(excinfo.value)


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        (b"a,b\n1,2\n3\n", 3, "expected 2 fields"),
        (b"a,b\n1,2\n\n3,4,5\n", 4, "expected 2 fields"),
        (b"a,b\n1,2\n3,\xff\n", 3, "invalid UTF-8"),
        (b"a,b,c\n1,2,\xff\n", 2, "invalid UTF-8"),  # in a column nobody asked for
        (b'a,b\n1,2\n"3\n",4\n', 3, "malformed CSV"),
        (b'a,b\n1,"2', 2, "malformed CSV"),
        (b"a,b\n1,2\r3,4\n", 2, "carriage return"),
        (b"a,b\n1,2\n  \n", 3, "expected 2 fields"),
        (b"", 1, "header"),
        (b"\na,b\n1,2\n", 1, "header"),
        (b"a,b,a\n1,2,3\n", 1, "twice"),
    ],
)
def test_csv_errors_name_the_line(text: bytes, line: int, reason: str) -> None:
    with pytest.raises(LoadError) as excinfo:
        csv_table(text)
    assert excinfo.value.file == "in.csv"
    assert excinfo.value.line == line
    assert reason in excinfo.value.reason


# --- reading JSON Lines --------------------------------------------------------


def test_jsonl_values_lines_and_blank_lines() -> None:
    text = '{"a": "1", "b": "2", "x": {"n": 1}}\n\n   \n{"b": "4", "a": "3"}\n\n'
    table = jsonl_table(text)
    assert values(table, "a") == ["1", "3"]
    assert table.lines.tolist() == [1, 4]


def test_jsonl_integers_read_as_text_and_null_optional_as_empty() -> None:
    table = jsonl_table(
        '{"a": "1", "b": 7, "c": null}\n{"a": "2", "b": -3, "c": "z"}\n', optional=("c",)
    )
    assert values(table, "b") == ["7", "-3"]
    assert values(table, "c") == ["", "z"]
    assert table.lines.tolist() == [1, 2]


def test_jsonl_fields_mixing_integers_and_strings() -> None:
    table = jsonl_table(
        '{"a": "1", "b": 7}\n{"a": 2, "b": "x"}\n{"a": "3", "b": 12345678901234567890123}\n'
    )
    assert values(table, "a") == ["1", "2", "3"]
    assert values(table, "b") == ["7", "x", "12345678901234567890123"]


def test_jsonl_other_fields_may_repeat() -> None:
    for b in ('"2"', "2"):  # the fast reader, then the slow one (an integer and a string)
        text = '{"a": "1", "b": ' + b + ', "x": 1, "x": {"y": 1, "y": 2}}\n{"a": "2", "b": "z"}\n'
        assert values(jsonl_table(text), "a") == ["1", "2"]


def test_jsonl_optional_field_absent_everywhere() -> None:
    table = jsonl_table('{"a": "1", "b": "2"}\n', optional=("c",))
    assert "c" not in table.columns
    assert values(table, "c") == [""]


def test_jsonl_empty_file_has_no_records() -> None:
    assert len(jsonl_table("")) == 0
    assert len(jsonl_table("\n  \n")) == 0


@pytest.mark.parametrize(
    ("text", "line", "field", "reason"),
    [
        (b'{"a": "1", "b": "2"}\n{"a": "3"}\n', 2, "b", "missing"),
        (b'{"a": "1", "b": "2"}\n\n{"a": "3", "b": null}\n', 3, "b", "missing"),
        (b'{"a": "1", "b": "2"}\n{"a": "\xff", "b": "2"}\n', 2, "", "invalid UTF-8"),
        (b'{"a": "1", "b": "2"}\n{"a": "1"\n', 2, "", "malformed JSON"),
        (b'{"a": "1", "b": "2"} {"a": "1", "b": "2"}\n', 1, "", "malformed JSON"),
        (b'{"a": "1", "b": "2"}\n[1, 2]\n', 2, "", "JSON object"),
        (b'{"a": "1", "b": 2.5}\n', 1, "b", "expected a string"),
        (b'{"a": "1", "b": true}\n', 1, "b", "expected a string"),
        (b'{"a": "1", "b": "2", "a": "3"}\n', 1, "a", "twice"),
        (b'{"a": "1", "b": 2, "a": "3"}\n', 1, "a", "twice"),  # slow reader: an integer
        (b'{"a": "1",\n "b": "2"}\n', 1, "", "malformed JSON"),
        (b'{"a": "1", "b": NaN}\n', 1, "", "malformed JSON"),
        (b'{"a": "1", "b": "2"}\r{"a": "1", "b": "2"}\n', 1, "", "carriage return"),
    ],
)
def test_jsonl_errors_name_the_line(text: bytes, line: int, field: str, reason: str) -> None:
    with pytest.raises(LoadError) as excinfo:
        jsonl_table(text)
    assert load_error(excinfo) == ("in.jsonl", line, field)
    assert reason in excinfo.value.reason


# --- files and formats ---------------------------------------------------------


def test_read_table_by_extension(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("a,b\n1,2\n")
    (tmp_path / "r.ndjson").write_text('{"a": "1", "b": "2"}\n')
    assert values(read_table(tmp_path / "r.csv", ["a", "b"]), "a") == ["1"]
    assert values(read_table(tmp_path / "r.ndjson", ["a", "b"]), "b") == ["2"]
    assert detect_format("x.JSONL") == "jsonl"
    with pytest.raises(LoadError, match="unknown file type"):
        read_table(tmp_path / "r.txt", ["a"])
    with pytest.raises(LoadError, match="cannot read"):
        read_table(tmp_path / "absent.csv", ["a"])


def test_a_missing_file_says_cannot_read_it_without_a_line_or_field(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(LoadError) as info:
        read_table(path, ["a"])
    assert str(info.value) == f"cannot read {path}: No such file or directory"
    assert (info.value.file, info.value.line) == (str(path), 0)


def test_a_jsonl_file_named_csv_gets_the_hint_to_say_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "registry.csv"
    path.write_text('{"a": "1", "b": "2"}\n{"a": "3", "b": "4"}\n')
    with pytest.raises(LoadError, match=r"malformed CSV.*--format jsonl") as info:
        read_table(path, ["a", "b"])
    assert info.value.line == 1
    assert len(read_table(path, ["a", "b"], file_format="jsonl")) == 2  # as the hint says


def test_explicit_format_overrides_extension(tmp_path: Path) -> None:
    path = tmp_path / "r.txt"
    path.write_text('{"a": "1", "b": "2"}\n')
    assert len(read_table(path, ["a", "b"], file_format="jsonl")) == 1


_cell = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\r\n\x00"),
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.tuples(_cell, _cell), max_size=30),
    blanks=st.lists(st.integers(0, 2), min_size=31, max_size=31),
)
def test_csv_and_jsonl_read_what_was_written_on_the_right_lines(
    rows: list[tuple[str, str]], blanks: list[int]
) -> None:
    """Any values, any blank lines between records: values and line numbers survive."""
    out_csv, out_jsonl = io.StringIO(), io.StringIO()
    writer = csv.writer(out_csv, lineterminator="\n")
    writer.writerow(["a", "b"])
    csv_lines, jsonl_lines = [], []
    csv_line, jsonl_line = 1, 0
    for (a, b), blank in zip(rows, blanks, strict=False):
        out_csv.write("\n" * blank)
        out_jsonl.write("\n" * blank)
        csv_line += blank + 1
        jsonl_line += blank + 1
        writer.writerow([a, b])
        out_jsonl.write(json.dumps({"a": a, "b": b}) + "\n")
        csv_lines.append(csv_line)
        jsonl_lines.append(jsonl_line)
    for table, expected_lines in (
        (csv_table(out_csv.getvalue()), csv_lines),
        (jsonl_table(out_jsonl.getvalue()), jsonl_lines),
    ):
        assert values(table, "a") == [a for a, _ in rows]
        assert values(table, "b") == [b for _, b in rows]
        assert table.lines.tolist() == expected_lines


# --- validators ----------------------------------------------------------------

_letters = st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), min_size=1, max_size=2)
_practitioner_codes = st.builds(
    lambda letters, number: f"{letters}{number:012d}", _letters, st.integers(0, 10**12 - 1)
)
_institution_codes = st.builds(
    lambda letter, number: f"{letter}{number:011d}",
    st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    st.integers(0, 10**11 - 1),
)


@settings(max_examples=50, deadline=None)
@given(st.lists(_practitioner_codes, min_size=1, max_size=200))
def test_practitioner_keys_equal_gateway_codes(codes: list[str]) -> None:
    keys = practitioner_keys(one_column("practitioner_code", codes))
    assert keys.dtype == np.uint64
    assert keys.tolist() == [encode_practitioner(code) for code in codes]


@settings(max_examples=50, deadline=None)
@given(st.lists(_institution_codes, min_size=1, max_size=200))
def test_institution_keys_equal_gateway_codes(codes: list[str]) -> None:
    keys = institution_keys(one_column("institution_code", codes))
    assert keys.tolist() == [encode_institution(code) for code in codes]


@settings(max_examples=50, deadline=None)
@given(st.lists(_practitioner_codes, min_size=1, max_size=200))
def test_contract_vectorised_practitioner_encoding_equals_the_scalar_one(codes: list[str]) -> None:
    first = np.array([ord(c[0]) for c in codes], dtype=np.uint8)
    second = np.array([ord(c[1]) if c[1].isalpha() else 0 for c in codes], dtype=np.uint8)
    digits = np.array([int(c[-12:]) for c in codes], dtype=np.int64)
    keys = encode_practitioners_array(first, second, digits)
    assert keys.dtype == np.uint64
    assert keys.tolist() == [encode_practitioner(code) for code in codes]


@settings(max_examples=50, deadline=None)
@given(st.lists(_institution_codes, min_size=1, max_size=200))
def test_contract_vectorised_institution_encoding_equals_the_scalar_one(codes: list[str]) -> None:
    letter = np.array([ord(c[0]) for c in codes], dtype=np.uint8)
    digits = np.array([int(c[1:]) for c in codes], dtype=np.int64)
    keys = encode_institutions_array(letter, digits)
    assert keys.dtype == np.uint64
    assert keys.tolist() == [encode_institution(code) for code in codes]


def test_code_keys_on_fixed_examples() -> None:
    codes = ["D110105000123", "HY110105000789", "HJ000000000000", "ZZ999999999999", "A000000000001"]
    keys = practitioner_keys(one_column("practitioner_code", codes))
    assert keys.tolist() == [encode_practitioner(c) for c in codes]
    assert institution_keys(one_column("i", ["H11010500001", "P99999999999"]), "i").tolist() == [
        encode_institution("H11010500001"),
        encode_institution("P99999999999"),
    ]


_almost_codes = st.one_of(
    _practitioner_codes,
    st.text(st.sampled_from("ADZaz09 -Ä１"), max_size=16),
    _practitioner_codes.map(lambda c: c + "0"),
    _practitioner_codes.map(lambda c: c.lower()),
    _practitioner_codes.map(lambda c: " " + c),
    _practitioner_codes.map(lambda c: c[:-1] + "１"),  # a full-width digit
    st.just("ABC000000000000"),
    st.just(""),
)


@settings(max_examples=200, deadline=None)
@given(_almost_codes)
def test_practitioner_validation_agrees_with_gateway_codes(code: str) -> None:
    table = one_column("practitioner_code", ["D110105000001", code])
    if try_encode_practitioner(code) < 0:
        with pytest.raises(LoadError) as excinfo:
            practitioner_keys(table)
        assert (excinfo.value.line, excinfo.value.field) == (3, "practitioner_code")
    else:
        assert int(practitioner_keys(table)[1]) == encode_practitioner(code)


@pytest.mark.parametrize(
    "code", ["H1101050000", "H110105000011", "h11010500001", "HH1010500001", "H1101050000X"]
)
def test_bad_institution_codes(code: str) -> None:
    with pytest.raises(InvalidCodeError):
        encode_institution(code)
    with pytest.raises(LoadError) as excinfo:
        institution_keys(one_column("institution_code", ["H11010500001", code]))
    assert excinfo.value.line == 3
    assert repr(code) in excinfo.value.reason


def test_errors_in_later_chunks_name_the_right_line() -> None:
    chunks = [
        pa.array(["D110105000001"] * 3),
        pa.array(["D110105000002"] * 2),
        pa.array(["N1", "x"]),
    ]
    table = Table(
        "t.csv",
        {"practitioner_code": pa.chunked_array(chunks)},
        np.arange(10, 17, dtype=np.int64),
    )
    with pytest.raises(LoadError) as excinfo:
        practitioner_keys(table)
    assert excinfo.value.line == 15
    assert "'N1'" in excinfo.value.reason


def test_keys_across_chunks() -> None:
    codes = [f"D{n:012d}" for n in range(7)]
    chunks = [
        pa.array(codes[:3]),
        pa.array(codes[3:4]),
        pa.array([], pa.string()),
        pa.array(codes[4:]),
    ]
    table = Table("t", {"p": pa.chunked_array(chunks)}, np.arange(7, dtype=np.int64))
    assert practitioner_keys(table, "p").tolist() == [encode_practitioner(c) for c in codes]


_dates = st.dates(dt.date(1970, 1, 1), dt.date(2149, 6, 5)).map(dt.date.isoformat)
_almost_dates = st.one_of(
    _dates,
    st.builds(
        lambda y, m, d: f"{y:04d}-{m:02d}-{d:02d}",
        st.integers(1960, 2200),
        st.integers(0, 13),
        st.integers(0, 32),
    ),
    st.text(st.sampled_from("0123456789-/ "), max_size=11),
    st.sampled_from(
        [
            "2025-02-30",
            "2024-02-29",
            "2023-02-29",
            "1969-12-31",
            "2149-06-05",
            "2149-06-06",
            "2025-1-05",
            "+2025-01-05",
            "２０２５-01-01",
        ]
    ),
)


@settings(max_examples=300, deadline=None)
@given(_almost_dates)
def test_day_numbers_agree_with_gateway_days(text: str) -> None:
    table = one_column("d", ["2000-01-01", text])
    try:
        expected = iso_to_day(text)
    except DateError:
        with pytest.raises(LoadError) as excinfo:
            day_numbers(table, "d")
        assert (excinfo.value.line, excinfo.value.field) == (3, "d")
        return
    assert day_numbers(table, "d").tolist() == [iso_to_day("2000-01-01"), expected]


@settings(max_examples=30, deadline=None)
@given(st.lists(_dates, min_size=1, max_size=100))
def test_day_numbers_in_bulk(texts: list[str]) -> None:
    days = day_numbers(one_column("d", texts), "d")
    assert days.dtype == np.uint16
    assert days.tolist() == [iso_to_day(t) for t in texts]


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1960, 2200), st.integers(0, 13), st.integers(0, 32)), min_size=1)
)
def test_contract_vectorised_dates_equal_the_scalar_ones(ymd: list[tuple[int, int, int]]) -> None:
    columns = np.array(ymd, dtype=np.int64).reshape(-1, 3)
    year, month, mday = columns[:, 0], columns[:, 1], columns[:, 2]
    real = real_dates(year, month, mday)
    days = days_from_civil(year, month, mday)
    for (y, m, d), is_real, day in zip(ymd, real.tolist(), days.tolist(), strict=True):
        try:
            date = dt.date(y, m, d)
        except ValueError:
            assert not is_real
            continue
        assert is_real
        assert day == date.toordinal() - dt.date(1970, 1, 1).toordinal()
        if dt.date(1970, 1, 1) <= date <= dt.date(2149, 6, 5):
            assert day == date_to_day(date)


def test_bad_date_error_says_why() -> None:
    with pytest.raises(LoadError, match="not a real calendar date"):
        day_numbers(one_column("d", ["2025-02-30"]), "d")
    with pytest.raises(LoadError, match="outside"):
        day_numbers(one_column("d", ["1969-12-31"]), "d")
    with pytest.raises(LoadError, match="YYYY-MM-DD"):
        day_numbers(one_column("d", ["25-02-03"]), "d")


def test_optional_dates() -> None:
    table = one_column("d", ["", "2025-01-01", ""])
    assert day_numbers(table, "d", optional=True).tolist() == [
        DAY_NONE,
        iso_to_day("2025-01-01"),
        DAY_NONE,
    ]
    with pytest.raises(LoadError) as excinfo:
        day_numbers(table, "d")
    assert excinfo.value.line == 2
    with pytest.raises(LoadError) as excinfo:
        day_numbers(one_column("d", ["", "2025-02-29"]), "d", optional=True)
    assert excinfo.value.line == 3


def test_enum_values() -> None:
    table = one_column("s", ["ACTIVE", "SUSPENDED"])
    assert enum_values(table, "s", {"ACTIVE": 1, "SUSPENDED": 3}, np.uint8).tolist() == [1, 3]
    with pytest.raises(LoadError) as excinfo:
        enum_values(one_column("s", ["ACTIVE", "active"]), "s", {"ACTIVE": 1}, np.uint8)
    assert excinfo.value.line == 3
    assert "'active' is not one of ACTIVE" in excinfo.value.reason


def test_nonempty_strings() -> None:
    assert nonempty_strings(one_column("r", ["doctor"]), "r").to_pylist() == ["doctor"]
    with pytest.raises(LoadError) as excinfo:
        nonempty_strings(one_column("r", ["doctor", " "]), "r")
    assert (excinfo.value.line, excinfo.value.field) == (3, "r")


def test_integers() -> None:
    table = one_column("n", ["3", "-2", "012"])
    assert integers(table, "n", -5, 12).tolist() == [3, -2, 12]
    with pytest.raises(LoadError, match="outside"):
        integers(table, "n", 0, 12)
    with pytest.raises(LoadError, match="not an integer"):
        integers(one_column("n", ["3", "1.5"]), "n", 0, 12)
    assert integers(one_column("n", ["", "4"]), "n", 0, 12, empty=0).tolist() == [0, 4]
    with pytest.raises(LoadError) as excinfo:
        integers(one_column("n", ["1", ""]), "n", 0, 12)
    assert excinfo.value.line == 3


def test_huge_values_are_truncated_in_errors() -> None:
    with pytest.raises(LoadError) as excinfo:
        practitioner_keys(one_column("practitioner_code", ["D" * 100_000]))
    assert len(str(excinfo.value)) < 300
    assert "100000 chars" in str(excinfo.value)
    assert show_value("abc") == "'abc'"
