"""Reading loader input files into columns of strings, with exact line numbers.

Goal: a 15-million-row registry reads and validates in a few seconds, and a
bad record is still reported with its file, line, field and value.

Reading. Inputs are UTF-8, one record a line: CSV with a header row, or JSON
Lines (one object a line). The fast path hands the whole file to pyarrow's
multi-threaded C++ readers with every column typed as a string, so nothing is
guessed (``D110105000123`` stays a string, ``2025-02-30`` is not "fixed").
Record ``i`` is on line ``i + 2`` of a CSV file (``i + 1`` of JSON Lines)
when there are as many records as lines, which counting newlines (memchr
speed) confirms; otherwise (blank lines) the exact mapping is computed in
one numpy pass over the bytes.
Whenever pyarrow refuses the file, or records and lines cannot be reconciled
(a quoted newline, a bare CR, two JSON objects on one line), a slow
line-by-line Python reader rereads the file to find the exact line: it is the
reference, the fast path an optimisation of it.

Rules, chosen to keep line numbers honest:

- A record never spans lines (no newline inside a quoted CSV value).
- Blank lines are skipped wherever they are and still counted, so line numbers
  stay exact. Blank means empty (CSV: empty or a lone CR) or, in JSON Lines,
  only whitespace. A CSV line of spaces is a one-field (ragged) record.
- Line endings are LF or CRLF; a CR elsewhere is refused.
- A UTF-8 byte-order mark at the start is ignored (spreadsheet exports).
- CSV: header names are trimmed of surrounding spaces; values are not (a code
  with a stray space is refused, showing the space). Columns not asked for
  are ignored; a duplicated header name is refused.
- JSON Lines: each line is an object; the wanted fields must be strings,
  integers (taken as their decimal text, so a ledger may write
  ``"points": 3``; a field mixing both takes the slow reader, ~8 s a
  million lines) or null; other fields are ignored; a wanted field given
  twice is refused. A null or absent required field is "missing".
- An optional column may be absent altogether; it then reads as empty.

Validation helpers turn a string column into numpy values in a few vectorised
passes (pyarrow.compute regular expressions and casts, numpy gathers on the
raw UTF-8 bytes) and, on the first bad value, raise ``LoadError`` with that
record's line, the field and the value. Their results match ``contract.codes``
and ``contract.days`` exactly; the tests check it on many values.
"""

from __future__ import annotations

import codecs
import csv
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json

from contract.codes import INSTITUTION_DIGITS, PRACTITIONER_DIGITS
from contract.days import DAY_NONE, MAX_DATE, MAX_DAY, MIN_DATE
from contract.errors import LoadError

FileFormat = Literal["csv", "jsonl"]
Lines = npt.NDArray[np.int64]

FORMAT_BY_SUFFIX: dict[str, FileFormat] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
PRACTITIONER_CODE_RE = f"^[A-Z]{{1,2}}[0-9]{{{PRACTITIONER_DIGITS}}}$"
INSTITUTION_CODE_RE = f"^[A-Z][0-9]{{{INSTITUTION_DIGITS}}}$"
ISO_DATE_RE = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
SHOWN_VALUE_CHARS = 40

_BOM = codecs.BOM_UTF8
# pyarrow reads a file in blocks of this size, one thread per block; a JSON
# line must fit in one block, so it is also the longest line the fast path takes.
_BLOCK_BYTES = 16 << 20
_WHITESPACE = b" \t\r\n"
_LETTER_BASE = ord("A") - 1  # contract.codes numbers letters from 1
_T = TypeVar("_T")


@dataclass(frozen=True)
class Table:
    """The records of one input file: string columns and each record's line number.

    ``columns`` holds one ``pyarrow.ChunkedArray`` of strings per wanted column
    present in the file, with no nulls (an absent optional value reads ``""``).
    Columns stay in pyarrow's chunks: joining them would copy the file again.
    """

    file: str
    columns: Mapping[str, Any]
    lines: Lines

    def __len__(self) -> int:
        return len(self.lines)

    def column(self, name: str) -> Any:
        """The named column as a pyarrow ChunkedArray of strings (all ``""`` if absent)."""
        if name in self.columns:
            return self.columns[name]
        return pa.chunked_array([pa.repeat("", len(self)).cast(pa.string())])

    def line_of(self, row: int) -> int:
        """The file line number of record ``row``."""
        return int(self.lines[row])

    def value(self, row: int, name: str) -> str:
        """The text of one field of one record."""
        return str(self.column(name)[row].as_py())

    def error(self, row: int, name: str, reason: str) -> LoadError:
        """A ``LoadError`` for record ``row``: file, that record's line, field, reason."""
        return LoadError(self.file, self.line_of(row), name, reason)


def show_value(value: str) -> str:
    """``repr`` of a value for an error message, truncated if huge."""
    if len(value) <= SHOWN_VALUE_CHARS:
        return repr(value)
    return f"{value[:SHOWN_VALUE_CHARS]!r}… ({len(value)} chars)"


def detect_format(path: Path | str) -> FileFormat:
    """The format named by the file's extension: .csv, .jsonl or .ndjson."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMAT_BY_SUFFIX:
        known = ", ".join(FORMAT_BY_SUFFIX)
        raise LoadError(str(path), 0, "", f"unknown file type {suffix!r}: expected {known}")
    return FORMAT_BY_SUFFIX[suffix]


def read_table(
    path: Path | str,
    required: Sequence[str],
    optional: Sequence[str] = (),
    *,
    file_format: FileFormat | None = None,
) -> Table:
    """Read a CSV or JSON Lines file into string columns; raise ``LoadError``.

    ``file_format`` defaults to the one named by the extension. Line 0 in a
    ``LoadError`` means the file as a whole (unreadable, unknown type).
    """
    fmt = file_format or detect_format(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise LoadError(str(path), 0, "", f"cannot read: {exc.strerror or exc}") from exc
    return parse_table(data, str(path), required, optional, file_format=fmt)


def parse_table(
    data: bytes,
    file: str,
    required: Sequence[str],
    optional: Sequence[str] = (),
    *,
    file_format: FileFormat,
) -> Table:
    """Like ``read_table`` on bytes already in memory; ``file`` names them in errors."""
    wanted = [*required, *optional]
    if len(set(wanted)) != len(wanted):
        raise ValueError(f"a column is asked for twice: {wanted}")
    if file_format == "csv":
        return _parse_csv(data, file, required, optional)
    if file_format == "jsonl":
        return _parse_jsonl(data, file, required, optional)
    raise ValueError(f"unknown file format {file_format!r}")


# ---------------------------------------------------------------------------
# CSV


def _parse_csv(data: bytes, file: str, required: Sequence[str], optional: Sequence[str]) -> Table:
    start = len(_BOM) if data.startswith(_BOM) else 0
    end = _trimmed_end(data, b"\r\n")
    first_nl = data.find(b"\n", start, end)
    header = _csv_header(data[start : end if first_nl < 0 else first_nl], file)
    missing = [name for name in required if name not in header]
    if missing:
        raise LoadError(file, 1, missing[0], f"required column {missing[0]!r} is missing")
    present = [name for name in (*required, *optional) if name in header]
    if first_nl < 0:  # a header and no records
        return Table(file, {name: _empty_column() for name in present}, _no_lines())

    table: Any = None
    if _line_endings_ok(data, start, end) and _valid_utf8(data, start, end):
        try:
            table = pa_csv.read_csv(
                _reader(data, start, end),
                read_options=pa_csv.ReadOptions(
                    column_names=header, skip_rows=1, block_size=_BLOCK_BYTES
                ),
                parse_options=pa_csv.ParseOptions(newlines_in_values=False),
                convert_options=pa_csv.ConvertOptions(
                    include_columns=present,
                    column_types={name: pa.string() for name in present},
                    strings_can_be_null=False,
                ),
            )
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            _scan_csv(data, file, len(header))
            raise LoadError(file, 0, "", f"unreadable CSV: {exc}") from exc

    has_quotes = data.find(b'"', start, end) >= 0
    lines = None
    if table is not None:
        lines = _record_lines(data, start, end, table.num_rows, "csv")
    # An odd number of quotes may be an unterminated quote, which pyarrow
    # silently closes at the end of the file: let the strict reader look.
    if lines is None or (has_quotes and data.count(b'"', start, end) % 2):
        _scan_csv(data, file, len(header))
    if lines is None:
        raise LoadError(file, 0, "", "records do not match lines (a record spans lines?)")
    return Table(file, {name: table.column(name) for name in present}, lines)


def _csv_header(raw: bytes, file: str) -> list[str]:
    text = _decode_line(raw, file, 1)
    if text.endswith("\r"):
        text = text[:-1]
    if not text.strip():
        raise LoadError(file, 1, "", "line 1 must be the header row (column names)")
    names = [name.strip() for name in _csv_fields(text, file, 1)]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise LoadError(file, 1, name, f"column {name!r} appears twice in the header")
    return names


def _csv_fields(text: str, file: str, line: int) -> list[str]:
    if "\r" in text:
        raise LoadError(file, line, "", "carriage return inside a line")
    try:
        rows = list(csv.reader([text], strict=True))
    except csv.Error as exc:
        raise LoadError(
            file, line, "", f"malformed CSV ({exc}); a record must fit on one line"
        ) from None
    return rows[0] if rows else [""]


def _scan_csv(data: bytes, file: str, n_fields: int) -> None:
    """Slow path: check each line; raise ``LoadError`` at the first bad one."""
    for line, raw in _physical_lines(data):
        if line == 1:
            continue
        text = _decode_line(raw, file, line)
        if text.endswith("\r"):
            text = text[:-1]
        if not text:
            continue
        fields = _csv_fields(text, file, line)
        if len(fields) != n_fields:
            raise LoadError(
                file, line, "", f"expected {n_fields} fields as in the header, got {len(fields)}"
            )


# ---------------------------------------------------------------------------
# JSON Lines


def _parse_jsonl(data: bytes, file: str, required: Sequence[str], optional: Sequence[str]) -> Table:
    start = len(_BOM) if data.startswith(_BOM) else 0
    end = _trimmed_end(data, _WHITESPACE)
    wanted = [*required, *optional]
    columns: dict[str, Any] | None = None
    lines = None
    if end > start and _line_endings_ok(data, start, end) and _valid_utf8(data, start, end):
        table = _read_jsonl_fast(data, start, end, wanted)
        if table is not None:
            lines = _record_lines(data, start, end, table.num_rows, "jsonl")
            columns = {name: table.column(name) for name in wanted}
    if columns is None or lines is None:
        columns, lines = _read_jsonl_slowly(data, file, wanted)

    n = len(lines)
    table_columns: dict[str, Any] = {}
    for name in wanted:
        column = columns[name]
        nulls = column.null_count
        if nulls and name in required:
            row = _first_false(pc.is_valid(column))
            assert row is not None
            raise LoadError(file, int(lines[row]), name, f"required field {name!r} is missing")
        if nulls == n and name in optional:
            continue  # absent from every record: read as an absent column
        table_columns[name] = pc.fill_null(column, "") if nulls else column
    return Table(file, table_columns, lines)


# Arrow's message when a field typed as a string holds a number.
_NUMBER_IN_STRING_FIELD = re.compile(r"Column\(/([^)]*)\) changed from string to number")


def _read_jsonl_fast(data: bytes, start: int, end: int, wanted: Sequence[str]) -> Any:
    """pyarrow's reader, every wanted field a string; None if it refuses the file.

    A field that holds integers (``"points": 3``) is read again as int64 and
    turned into text, so a numeric ledger stays on the fast path; anything
    else pyarrow refuses goes to the slow reader, which says where.
    """
    types = {name: pa.string() for name in wanted}
    for _ in range(len(wanted) + 1):
        try:
            table = pa_json.read_json(
                _reader(data, start, end),
                read_options=pa_json.ReadOptions(block_size=_BLOCK_BYTES),
                parse_options=pa_json.ParseOptions(
                    explicit_schema=pa.schema(list(types.items())),
                    unexpected_field_behavior="ignore",
                    newlines_in_values=False,
                ),
            )
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            number = _NUMBER_IN_STRING_FIELD.search(str(exc))
            if number is None or types.get(number.group(1)) != pa.string():
                return None
            types[number.group(1)] = pa.int64()
            continue
        for name, kind in types.items():
            if kind != pa.string():
                index = table.schema.get_field_index(name)
                table = table.set_column(index, name, pc.cast(table.column(name), pa.string()))
        return table
    return None


def _read_jsonl_slowly(
    data: bytes, file: str, wanted: Sequence[str]
) -> tuple[dict[str, Any], Lines]:
    """Slow path: parse line by line with exact errors; integers become text."""
    values: dict[str, list[str | None]] = {name: [] for name in wanted}
    record_lines: list[int] = []
    pairs = _PairsHook()
    for line, raw in _physical_lines(data):
        text = _decode_line(raw, file, line)
        if not text.strip(" \t\r"):
            continue
        if "\r" in text.rstrip("\r"):
            raise LoadError(file, line, "", "carriage return inside a line")
        try:
            record = json.loads(text, object_pairs_hook=pairs, parse_constant=_refuse_constant)
        except (json.JSONDecodeError, _ConstantError) as exc:
            raise LoadError(file, line, "", f"malformed JSON: {exc}") from None
        if not isinstance(record, dict):
            raise LoadError(file, line, "", f"expected a JSON object, got {type(record).__name__}")
        # The hook sees the outermost object last: its repeats are the record's.
        twice = [name for name in pairs.repeated if name in values]
        if twice:
            raise LoadError(file, line, twice[0], f"malformed JSON: {twice[0]!r} appears twice")
        for name in wanted:
            value = record.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            elif value is not None and not isinstance(value, str):
                shown = show_value(json.dumps(value))
                raise LoadError(file, line, name, f"expected a string, got {shown}")
            values[name].append(value)
        record_lines.append(line)
    columns = {name: pa.chunked_array([pa.array(values[name], pa.string())]) for name in wanted}
    return columns, np.array(record_lines, dtype=np.int64)


class _ConstantError(ValueError):
    pass


class _PairsHook:
    """``object_pairs_hook`` that remembers the keys repeated in the last object built.

    pyarrow refuses a wanted field given twice ("specified twice") and
    ignores repeats of other fields; the slow reader does the same.
    """

    def __init__(self) -> None:
        self.repeated: list[str] = []

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        record = dict(pairs)
        self.repeated = []
        if len(record) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    self.repeated.append(key)
                seen.add(key)
        return record


def _refuse_constant(name: str) -> Any:
    raise _ConstantError(f"{name} is not a JSON value")


# ---------------------------------------------------------------------------
# Lines and bytes


def _trimmed_end(data: bytes, chars: bytes) -> int:
    """End of the data without its trailing blank lines (never copies the data)."""
    end = len(data)
    while end and data[end - 1] in chars:
        end -= 1
    return end


def _line_endings_ok(data: bytes, start: int, end: int) -> bool:
    """No bare CR: pyarrow would take it for a line end, so lines would not count."""
    # Fast path: most files have no CR at all, and find() runs at memchr speed.
    if data.find(b"\r", start, end) < 0:
        return True
    return data.count(b"\r", start, end) == data.count(b"\r\n", start, end)


def _valid_utf8(data: bytes, start: int, end: int) -> bool:
    """Whether the bytes are UTF-8, checked by Arrow's SIMD validator (no copy).

    pyarrow's JSON reader does not check, and its CSV reader only checks the
    columns it converts; the slow readers say where the bad byte is.
    """
    if end - start < 1 << 31:
        offsets = np.array([0, end - start], dtype=np.int32)
        array = pa.StringArray.from_buffers(
            1, pa.py_buffer(offsets), pa.py_buffer(data).slice(start, end - start)
        )
    else:
        offsets = np.array([0, end - start], dtype=np.int64)
        array = pa.LargeStringArray.from_buffers(
            1, pa.py_buffer(offsets), pa.py_buffer(data).slice(start, end - start)
        )
    try:
        array.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _record_lines(data: bytes, start: int, end: int, rows: int, fmt: FileFormat) -> Lines | None:
    """Line number of each record pyarrow read, or None if they cannot be matched.

    Fast path: as many records as lines, so record i is on line i + 2 (CSV,
    after the header) or i + 1: with no bare CR, a record spanning lines
    would make fewer records than lines, and blank lines are skipped. Only
    when the counts differ does one numpy pass find the non-blank lines.
    """
    first = 2 if fmt == "csv" else 1
    n_lines = data.count(b"\n", start, end) + 1
    if rows == n_lines - first + 1:
        return np.arange(first, first + rows, dtype=np.int64)
    buf = np.frombuffer(data, dtype=np.uint8, count=end)
    newlines = np.flatnonzero(buf == ord("\n"))
    starts = np.concatenate(([start], newlines + 1))
    ends = np.concatenate((newlines, [end]))
    length = ends - starts
    if fmt == "csv":
        ends_in_cr = (length > 0) & (buf[np.maximum(ends - 1, 0)] == ord("\r"))
        blank = (length - ends_in_cr) == 0
    else:
        content = ~np.isin(buf, np.frombuffer(_WHITESPACE, dtype=np.uint8))
        has_content = np.maximum.reduceat(content, np.minimum(starts, end - 1))
        blank = (length == 0) | ~has_content
    lines = np.flatnonzero(~blank).astype(np.int64) + 1
    lines = lines[lines >= first]
    return lines if len(lines) == rows else None


def _physical_lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes without the LF) for each line; a final LF ends the last."""
    pos, line, size = 0, 1, len(data)
    while pos < size:
        nl = data.find(b"\n", pos)
        if nl < 0:
            nl = size
        yield line, data[pos:nl]
        pos, line = nl + 1, line + 1


def _decode_line(raw: bytes, file: str, line: int) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LoadError(
            file, line, "", f"invalid UTF-8 at byte {exc.start + 1} of the line"
        ) from None
    return text[1:] if line == 1 and text.startswith("\ufeff") else text


def _reader(data: bytes, start: int, end: int) -> Any:
    """A pyarrow reader over ``data[start:end]``, without copying."""
    return pa.BufferReader(pa.py_buffer(data).slice(start, end - start))


def _no_lines() -> Lines:
    return np.zeros(0, dtype=np.int64)


def _empty_column() -> Any:
    return pa.chunked_array([], pa.string())


# ---------------------------------------------------------------------------
# Vectorised validation


def _first_false(mask: Any) -> int | None:
    """Row of the first false in a boolean pyarrow or numpy array; None if all true."""
    if isinstance(mask, np.ndarray):
        bad = np.flatnonzero(~mask)
        return int(bad[0]) if len(bad) else None
    if pc.all(mask).as_py() is not False:
        return None
    return int(pc.index(mask, False).as_py())


def _per_chunk(column: Any, work: Callable[[Any], _T]) -> list[_T]:
    """``work`` on each chunk of a column, on all cores (pyarrow and numpy release the GIL)."""
    chunks = column.chunks
    if len(chunks) <= 1:
        return [work(chunk) for chunk in chunks]
    with ThreadPoolExecutor(max_workers=min(len(chunks), os.cpu_count() or 1)) as pool:
        return list(pool.map(work, chunks))


def _check_chunks(table: Table, field: str, bad_rows: list[int | None], what: str) -> None:
    """Raise for the first bad row of the first chunk that has one."""
    column = table.column(field)
    base = 0
    for chunk, bad in zip(column.chunks, bad_rows, strict=True):
        if bad is not None:
            row = base + bad
            raise table.error(row, field, f"invalid {what}: {show_value(table.value(row, field))}")
        base += len(chunk)


def _require_match(table: Table, field: str, column: Any, pattern: str, what: str) -> None:
    bad_rows = _per_chunk(
        column, lambda chunk: _first_false(pc.match_substring_regex(chunk, pattern))
    )
    _check_chunks(table, field, bad_rows, what)


def _string_bytes(chunk: Any) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
    """(offsets[n+1], UTF-8 bytes) of one pyarrow string array, without copying the bytes."""
    offset_type = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
    _, offsets_buf, data_buf = chunk.buffers()
    if offsets_buf is None:  # an empty array may come without buffers
        return np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.uint8)
    offsets = np.frombuffer(offsets_buf, dtype=offset_type)[
        chunk.offset : chunk.offset + len(chunk) + 1
    ]
    data = (
        np.frombuffer(data_buf, dtype=np.uint8)
        if data_buf is not None
        else np.zeros(0, dtype=np.uint8)
    )
    return offsets.astype(np.int64), data


def _code_keys(
    chunk: Any, pattern: str, n_digits: int, max_letters: int
) -> tuple[int | None, npt.NDArray[np.uint64]]:
    """(first bad row or None, keys) of one chunk of codes: letters, then ``n_digits`` digits.

    The key is ``letters * 10**n_digits + digits`` where ``letters`` is
    ``L`` for one-letter codes (institutions) and ``27 * L1 + L2`` with
    ``L2 = 0`` for a single letter otherwise (``contract.codes``). The letters
    are read straight from the UTF-8 bytes, the digits by Arrow's integer
    parser on the last ``n_digits`` bytes: no Python loop per value.
    """
    bad = _first_false(pc.match_substring_regex(chunk, pattern))
    if bad is not None or len(chunk) == 0:
        return bad, np.zeros(0, dtype=np.uint64)
    offsets, data = _string_bytes(chunk)
    starts, ends = offsets[:-1], offsets[1:]
    letters = data[starts].astype(np.uint64) - np.uint64(_LETTER_BASE)
    if max_letters == 2:
        second = data[np.minimum(starts + 1, ends - 1)].astype(np.uint64)
        two = (ends - starts) == n_digits + 2
        letters = np.uint64(27) * letters + np.where(two, second - np.uint64(_LETTER_BASE), 0)
    tail = pc.binary_slice(chunk.cast(pa.binary()), -n_digits)
    digits = pc.cast(tail, pa.int64()).to_numpy().astype(np.uint64)
    keys: npt.NDArray[np.uint64] = letters * np.uint64(10**n_digits) + digits
    return None, keys


def _keys(
    table: Table, field: str, pattern: str, n_digits: int, max_letters: int, what: str
) -> npt.NDArray[np.uint64]:
    column = table.column(field)
    results = _per_chunk(column, lambda chunk: _code_keys(chunk, pattern, n_digits, max_letters))
    _check_chunks(table, field, [bad for bad, _ in results], what)
    if not results:
        return np.zeros(0, dtype=np.uint64)
    return np.concatenate([keys for _, keys in results])


def practitioner_keys(table: Table, field: str = "practitioner_code") -> npt.NDArray[np.uint64]:
    """Keys of a column of practitioner codes, equal to ``contract.codes.encode_practitioner``."""
    what = "practitioner code (1-2 uppercase letters and 12 digits)"
    return _keys(table, field, PRACTITIONER_CODE_RE, PRACTITIONER_DIGITS, 2, what)


def institution_keys(table: Table, field: str = "institution_code") -> npt.NDArray[np.uint64]:
    """Keys of a column of institution codes, equal to ``contract.codes.encode_institution``."""
    what = "institution code (1 uppercase letter and 11 digits)"
    return _keys(table, field, INSTITUTION_CODE_RE, INSTITUTION_DIGITS, 1, what)


def days_from_civil(
    year: npt.NDArray[np.int64], month: npt.NDArray[np.int64], day: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """Days since 1970-01-01 of proleptic Gregorian dates (valid dates only).

    Howard Hinnant's ``days_from_civil``
    (https://howardhinnant.github.io/date_algorithms.html#days_from_civil),
    vectorised: the year is counted from March so that the leap day is last.
    """
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + np.where(month > 2, -3, 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    result: npt.NDArray[np.int64] = era * 146097 + doe - 719468
    return result


_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def _parse_iso_dates(table: Table, field: str, column: Any) -> npt.NDArray[np.int64]:
    """Reference parser: day numbers of ``YYYY-MM-DD`` values, raising at the first bad one.

    Arrow's cast does the same much faster; this one says which value is bad.
    """
    _require_match(table, field, column, ISO_DATE_RE, "date (YYYY-MM-DD)")
    ymd = [
        pc.cast(pc.utf8_slice_codeunits(column, a, b), pa.int64()).to_numpy()
        for a, b in ((0, 4), (5, 7), (8, 10))
    ]
    year, month, mday = (np.asarray(part, dtype=np.int64) for part in ymd)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_ok = (month >= 1) & (month <= 12)
    last_day = _DAYS_IN_MONTH[np.where(month_ok, month, 0)] + (leap & (month == 2))
    bad = _first_false(month_ok & (mday >= 1) & (mday <= last_day))
    if bad is not None:
        value = show_value(table.value(bad, field))
        raise table.error(bad, field, f"{value} is not a real calendar date")
    return days_from_civil(year, month, mday)


def day_numbers(table: Table, field: str, *, optional: bool = False) -> npt.NDArray[np.uint16]:
    """Day numbers (``contract.days``) of a column of ``YYYY-MM-DD`` dates.

    Refuses anything but a real calendar date in 1970-01-01 .. 2149-06-05. With
    ``optional`` an empty value is allowed and reads ``DAY_NONE`` (an open end).
    """
    column = table.column(field)
    present = None
    if optional:
        mask = pc.not_equal(column, "")
        present = mask.to_numpy()
        if not present.all():
            column = pc.if_else(mask, column, "1970-01-01")  # a placeholder: DAY_NONE below
    # Fast path: Arrow's date parser accepts exactly YYYY-MM-DD of real dates.
    try:
        days = np.asarray(pc.cast(column, pa.date32()).cast(pa.int32()).to_numpy(), np.int64)
    except pa.ArrowInvalid:
        days = _parse_iso_dates(table, field, column)
    if len(days) and not ((days >= 0) & (days <= MAX_DAY)).all():
        bad = _first_false((days >= 0) & (days <= MAX_DAY))
        assert bad is not None
        value = show_value(table.value(bad, field))
        raise table.error(bad, field, f"{value} is outside {MIN_DATE} .. {MAX_DATE}")
    result = days.astype(np.uint16)
    if present is not None:
        result[~present] = DAY_NONE
    return result


def enum_values(
    table: Table, field: str, values: Mapping[str, int], dtype: type[np.unsignedinteger[Any]]
) -> npt.NDArray[Any]:
    """Map a column of names to numbers through ``values``; refuse any other name."""
    column = table.column(field)
    names = list(values)
    index = pc.index_in(column, value_set=pa.array(names, pa.string()))
    bad = _first_false(pc.is_valid(index))
    if bad is not None:
        allowed = ", ".join(names)
        value = show_value(table.value(bad, field))
        raise table.error(bad, field, f"{value} is not one of {allowed}")
    numbers = np.array([values[name] for name in names], dtype=dtype)
    result: npt.NDArray[Any] = numbers[index.to_numpy()]
    return result


def nonempty_strings(table: Table, field: str) -> Any:
    """The column (a pyarrow ChunkedArray), refusing empty or whitespace-only values."""
    column = table.column(field)
    _require_match(table, field, column, r"\S", "value: must not be empty or blank, got")
    return column


def integers(
    table: Table, field: str, low: int, high: int, *, empty: int | None = None
) -> npt.NDArray[np.int64]:
    """Integers in ``low..high`` written as decimal digits (an optional minus sign).

    With ``empty`` given, an empty value reads as it; otherwise it is refused.
    """
    column = table.column(field)
    mask = pc.not_equal(column, "")
    present = mask.to_numpy()
    if empty is not None and not present.all():
        column = pc.if_else(mask, column, "0")
    bad = _first_false(pc.match_substring_regex(column, "^-?[0-9]{1,18}$"))
    if bad is not None:
        raise table.error(bad, field, f"not an integer: {show_value(table.value(bad, field))}")
    numbers = np.array(pc.cast(column, pa.int64()).to_numpy(), dtype=np.int64)  # writable
    bad = _first_false(((numbers >= low) & (numbers <= high)) | ~present)
    if bad is not None:
        value = show_value(table.value(bad, field))
        raise table.error(bad, field, f"{value} is outside {low}..{high}")
    if empty is not None:
        numbers[~present] = empty
    return numbers
