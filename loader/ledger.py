"""Reading the scoring ledger (记分记录) into a ``loader.points.Ledger``.

The file is CSV with a header row or JSON Lines (``loader.tables`` reads it
into string columns with exact line numbers). Columns::

    event_id            required, unique, no surrounding spaces
    practitioner_code   required, 1-2 uppercase letters + 12 digits
    institution_code    required on SCORE (where the violation happened);
                        may be empty on REPAIR / SHORTEN / REVOKE (stored as 0)
    kind                SCORE | REPAIR | SHORTEN | REVOKE
    points              SCORE: the policy's score_points range (1..12);
                        REPAIR: 1..65535 (more than the total just leaves 0);
                        SHORTEN / REVOKE: ignored (may be empty)
    effective_on        required, YYYY-MM-DD (for a REVOKE: recorded, not used)
    suspension_months   optional; a value must lie in the policy's min..max
                        months. Under a policy whose lengths come from the
                        event (national) it is the length, and the SCORE(s)
                        of a year's first suspension must carry one (checked
                        by the engine, which knows which do). Under a table
                        policy (Jiangxi) the table gives the length; under
                        both, a value on a SCORE after a suspension already
                        triggered that year says the authority decided a new
                        one (SPEC §7: thresholds trigger when crossed)
    reference           REVOKE: the event_id of the revoked event (required);
                        other kinds: free text (a decision number), optional
    case_id             optional; the events of one handling decision (一次,
                        one 处理决定) share it: 一次性记满 and Jiangxi's 单次
                        lengths count a case's points. No surrounding spaces;
                        one practitioner per case. Empty: a case of its own.
                        A ledger without the column reads as all empty.

Every bad record stops the load with ``LoadError(file, line, field, reason)``:
bad codes, dates, kinds or numbers, a duplicate event_id (naming the first
line), a case_id of two practitioners (naming the first line), a REVOKE of
an unknown event_id, of another practitioner's event, of itself or in a
cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from contract.codes import decode_practitioner
from loader.columns import day_numbers, enum_values, institution_keys, integers, practitioner_keys
from loader.points import NO_CASE, NO_EVENT, POINTS_MAX_STORED, Kind, Ledger, resolve_revocations
from loader.policy import Policy
from loader.tables import FileFormat, Table, parse_table, read_table, show_value

REQUIRED = ("event_id", "practitioner_code", "institution_code", "kind", "effective_on")
OPTIONAL = ("points", "suspension_months", "reference", "case_id")
KINDS = {k.name: int(k) for k in (Kind.SCORE, Kind.REPAIR, Kind.SHORTEN, Kind.REVOKE)}
# A placeholder that passes the code check for rows allowed an empty institution.
_NO_INSTITUTION_CODE = "A00000000000"
_EVENT_ID_RE = r"^\S(.*\S)?$"


def read_ledger(
    path: Path | str, policy: Policy, *, file_format: FileFormat | None = None
) -> Ledger:
    """Read and validate a ledger file (format from its extension)."""
    table = read_table(path, REQUIRED, OPTIONAL, file_format=file_format)
    return ledger_from_table(table, policy)


def parse_ledger(data: bytes, file: str, policy: Policy, *, file_format: FileFormat) -> Ledger:
    """Like ``read_ledger`` on bytes in memory; ``file`` names them in errors."""
    return ledger_from_table(
        parse_table(data, file, REQUIRED, OPTIONAL, file_format=file_format), policy
    )


def ledger_from_table(table: Table, policy: Policy) -> Ledger:
    """Validate a table's columns and build the engine's ``Ledger``."""
    kind = enum_values(table, "kind", KINDS, np.uint8)
    is_score = kind == Kind.SCORE
    is_repair = kind == Kind.REPAIR

    event_ids: list[str] = _event_ids(table)
    practitioner = practitioner_keys(table)
    institution = _institutions(table, is_score)
    effective_on = day_numbers(table, "effective_on")

    # Points: parse every row as an integer (or empty), then check per kind.
    points, has_points = _optional_integers(table, "points")
    lo, hi = policy.score_min, policy.score_max
    _check(
        table,
        "points",
        is_score & (~has_points | (points < lo) | (points > hi)),
        f"SCORE points must be {lo}..{hi} (policy {policy.name!r}), got",
    )
    _check(
        table,
        "points",
        is_repair & (~has_points | (points < 1) | (points > POINTS_MAX_STORED)),
        f"REPAIR points must be 1..{POINTS_MAX_STORED}, got",
    )
    points = np.where(is_score | is_repair, points, 0)

    given, present = _optional_integers(table, "suspension_months")
    lo_m, hi_m = policy.min_months, policy.max_months
    _check(
        table,
        "suspension_months",
        present & ((given < lo_m) | (given > hi_m)),
        f"must be {lo_m}..{hi_m} months (policy {policy.name!r}), got",
    )
    months = np.where(is_score & present, given, 0).astype(np.uint8)
    case, case_names = _cases(table, practitioner)

    references: list[str] = table.column("reference").to_pylist()
    revokes = _revoked_rows(table, kind, event_ids, references)
    ledger = Ledger(
        file=table.file,
        event_id=event_ids,
        practitioner=practitioner,
        institution=institution,
        kind=kind,
        points=points.astype(np.uint16),
        effective_on=effective_on,
        suspension_months=months,
        reference=references,
        revokes=revokes,
        line=table.lines,
        case=case,
        case_names=case_names,
    )
    resolve_revocations(ledger)  # refuse REVOKE cycles and cross-practitioner ones now
    return ledger


def _optional_integers(table: Table, field: str) -> tuple[Any, Any]:
    """(values, present) of a column of integers that may be empty (0 there)."""
    column = table.column(field)
    given = pc.not_equal(column, "")
    present = np.asarray(given.to_numpy(zero_copy_only=False), dtype=np.bool_)
    if not present.all():
        column = pc.if_else(given, column, "0")
    filled = Table(table.file, {field: column}, table.lines)
    return integers(filled, field, -(10**18), 10**18), present


def _check(table: Table, field: str, bad: Any, reason: str) -> None:
    """Raise for the first row where ``bad`` is true, showing its value."""
    rows = np.flatnonzero(bad)
    if len(rows):
        row = int(rows[0])
        raise table.error(row, field, f"{reason} {show_value(table.value(row, field))}")


def _event_ids(table: Table) -> list[str]:
    column = table.column("event_id")
    ok = pc.match_substring_regex(column, _EVENT_ID_RE).to_numpy(zero_copy_only=False)
    _check(table, "event_id", ~ok, "must be non-empty without surrounding spaces, got")
    ids: list[str] = column.to_pylist()
    first: dict[str, int] = {}
    for row, event_id in enumerate(ids):
        seen = first.setdefault(event_id, row)
        if seen != row:
            raise table.error(
                row,
                "event_id",
                f"duplicate event_id {show_value(event_id)} (first on line {table.line_of(seen)})",
            )
    return ids


def _cases(table: Table, practitioner: Any) -> tuple[Any, list[str]]:
    """(case number per row, NO_CASE where empty; the case_ids as written).
    Refuse a case_id with surrounding spaces, or one given to two practitioners."""
    n = len(table)
    column = table.column("case_id")
    given = np.asarray(pc.not_equal(column, "").to_numpy(zero_copy_only=False), dtype=np.bool_)
    if not given.any():
        return Ledger.no_cases(n), []
    ok = pc.match_substring_regex(column, _EVENT_ID_RE).to_numpy(zero_copy_only=False)
    _check(table, "case_id", given & ~ok, "must have no surrounding spaces, got")
    encoded = pc.dictionary_encode(column).combine_chunks()
    names: list[str] = encoded.dictionary.to_pylist()
    indices = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    case = np.where(given, indices, NO_CASE)
    # One practitioner per case: every row of a case names its first row's.
    rows = np.flatnonzero(given)
    first = np.full(len(names), n, dtype=np.int64)
    np.minimum.at(first, case[rows], rows)
    bad = rows[practitioner[rows] != practitioner[first[case[rows]]]]
    if len(bad):
        row = int(bad[0])
        head = int(first[case[row]])
        raise table.error(
            row,
            "case_id",
            f"case {show_value(names[case[row]])} is for "
            f"{decode_practitioner(int(practitioner[head]))} (line {table.line_of(head)}), "
            f"not {decode_practitioner(int(practitioner[row]))}: one case, one practitioner",
        )
    return case, names


def _institutions(table: Table, is_score: Any) -> Any:
    column = table.column("institution_code")
    empty = pc.equal(column, "").to_numpy(zero_copy_only=False)
    _check(table, "institution_code", empty & is_score, "required on a SCORE event, got")
    if not empty.any():
        return institution_keys(table)
    filled = pc.if_else(pa.array(empty), _NO_INSTITUTION_CODE, column)
    keys = institution_keys(Table(table.file, {"institution_code": filled}, table.lines))
    keys[empty] = 0
    return keys


def _revoked_rows(table: Table, kind: Any, event_ids: list[str], references: list[str]) -> Any:
    """Row of the event each REVOKE names; NO_EVENT on other rows."""
    revokes = np.full(len(table), NO_EVENT, dtype=np.int64)
    revoke_rows = np.flatnonzero(kind == Kind.REVOKE).tolist()
    if not revoke_rows:
        return revokes
    row_of = {event_id: row for row, event_id in enumerate(event_ids)}
    for r in revoke_rows:
        ref = references[r]
        if not ref:
            raise table.error(r, "reference", "a REVOKE must name the event_id it revokes")
        target = row_of.get(ref)
        if target is None:
            raise table.error(r, "reference", f"REVOKE of unknown event_id {show_value(ref)}")
        revokes[r] = target
    return revokes
