"""Reading loader input files into columns of strings, with exact line numbers.

Goal: a 15-million-row registry reads in a few seconds, and a bad record is
still reported with its file, line, field and value.

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

Turning the string columns into codes, dates and numbers is
``loader.columns``'s work.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json

from contract.errors import LoadError, UnreadableFileError

FileFormat = Literal["csv", "jsonl"]
Lines = npt.NDArray[np.int64]

FORMAT_BY_SUFFIX: dict[str, FileFormat] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
SHOWN_VALUE_CHARS = 40

_BOM = codecs.BOM_UTF8
# pyarrow reads a file in blocks of this size, one thread per block; a JSON
# line must fit in one block, so it is also the longest line the fast path takes.
_BLOCK_BYTES = 16 << 20
_WHITESPACE = b" \t\r\n"


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
        raise UnreadableFileError(str(path), exc.strerror or str(exc)) from exc
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
    if text.lstrip().startswith("{"):  # a JSON Lines file named .csv
        raise LoadError(
            file,
            1,
            "",
            "malformed CSV: line 1 is a JSON object, not a header row; for a JSON Lines "
            "file give --format jsonl (or name it .jsonl)",
        )
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
            row = int(pc.index(pc.is_valid(column), False).as_py())
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
