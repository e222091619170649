"""Column validators: string columns of a ``Table`` -> numpy values, vectorised.

Goal: validating a 15-million-row registry takes a few passes over each
column, with no Python loop per value, and the first bad value is still
reported with its file, line, field and value (``LoadError``).

Each validator checks a column's form with a pyarrow.compute regular
expression or cast, then turns it into numbers with numpy on the raw UTF-8
bytes. The encodings themselves are the contract's (``contract.codes`` for
practitioner and institution keys, ``contract.days`` for day numbers), in
their vectorised form; the tests check them against the scalar ones on many
values. Columns are worked on chunk by chunk on all cores.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from contract.codes import (
    INSTITUTION_DIGITS,
    PRACTITIONER_DIGITS,
    encode_institutions_array,
    encode_practitioners_array,
)
from contract.days import DAY_NONE, MAX_DATE, MAX_DAY, MIN_DATE, days_from_civil, real_dates
from loader.tables import Table, show_value

PRACTITIONER_CODE_RE = f"^[A-Z]{{1,2}}[0-9]{{{PRACTITIONER_DIGITS}}}$"
INSTITUTION_CODE_RE = f"^[A-Z][0-9]{{{INSTITUTION_DIGITS}}}$"
ISO_DATE_RE = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"

_T = TypeVar("_T")
# (offsets[n+1], UTF-8 bytes, digits' values) of one chunk of codes -> their keys
_Encode = Callable[
    [npt.NDArray[np.int64], npt.NDArray[np.uint8], npt.NDArray[np.int64]], npt.NDArray[np.uint64]
]


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
    chunk: Any, pattern: str, n_digits: int, encode: _Encode
) -> tuple[int | None, npt.NDArray[np.uint64]]:
    """(first bad row or None, keys) of one chunk of codes: letters, then ``n_digits`` digits.

    The letters are read straight from the UTF-8 bytes, the digits by Arrow's
    integer parser on the last ``n_digits`` bytes, and ``encode`` (the
    contract's vectorised encoding) makes the keys: no Python loop per value.
    """
    bad = _first_false(pc.match_substring_regex(chunk, pattern))
    if bad is not None or len(chunk) == 0:
        return bad, np.zeros(0, dtype=np.uint64)
    offsets, data = _string_bytes(chunk)
    tail = pc.binary_slice(chunk.cast(pa.binary()), -n_digits)
    digits = np.asarray(pc.cast(tail, pa.int64()).to_numpy(), dtype=np.int64)
    return None, encode(offsets, data, digits)


def _encode_practitioners(
    offsets: npt.NDArray[np.int64], data: npt.NDArray[np.uint8], digits: npt.NDArray[np.int64]
) -> npt.NDArray[np.uint64]:
    starts = offsets[:-1]
    two_letters = (offsets[1:] - starts) == PRACTITIONER_DIGITS + 2
    second = np.where(two_letters, data[starts + 1], np.uint8(0))
    return encode_practitioners_array(data[starts], second, digits)


def _encode_institutions(
    offsets: npt.NDArray[np.int64], data: npt.NDArray[np.uint8], digits: npt.NDArray[np.int64]
) -> npt.NDArray[np.uint64]:
    return encode_institutions_array(data[offsets[:-1]], digits)


def _keys(
    table: Table, field: str, pattern: str, n_digits: int, encode: _Encode, what: str
) -> npt.NDArray[np.uint64]:
    column = table.column(field)
    results = _per_chunk(column, lambda chunk: _code_keys(chunk, pattern, n_digits, encode))
    _check_chunks(table, field, [bad for bad, _ in results], what)
    if not results:
        return np.zeros(0, dtype=np.uint64)
    return np.concatenate([keys for _, keys in results])


def practitioner_keys(table: Table, field: str = "practitioner_code") -> npt.NDArray[np.uint64]:
    """Keys of a column of practitioner codes, equal to ``contract.codes.encode_practitioner``."""
    what = "practitioner code (1-2 uppercase letters and 12 digits)"
    return _keys(
        table, field, PRACTITIONER_CODE_RE, PRACTITIONER_DIGITS, _encode_practitioners, what
    )


def institution_keys(table: Table, field: str = "institution_code") -> npt.NDArray[np.uint64]:
    """Keys of a column of institution codes, equal to ``contract.codes.encode_institution``."""
    what = "institution code (1 uppercase letter and 11 digits)"
    return _keys(table, field, INSTITUTION_CODE_RE, INSTITUTION_DIGITS, _encode_institutions, what)


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
    bad = _first_false(real_dates(year, month, mday))
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
    # Fast path: Arrow's date parser accepts exactly YYYY-MM-DD of real dates,
    # and its date32 counts days from 1970-01-01 as contract.days does.
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
