"""The authority's status feed (状态维护): sanctions and reinstatements by date.

One record per status decision (SPEC §6)::

    practitioner_code, status, effective_from, effective_until, reference

- ``status`` is SUSPENDED, TERMINATED or ACTIVE, and also WARNED (约谈、通报,
  payable, informational): the points engine derives it, and an authority
  that issues warnings outside the engine can send it too. NOT_REGISTERED is
  refused: registration comes from the registry alone.
- ``effective_from`` is the first day the status holds; ``effective_until``
  (optional, empty = open-ended) the LAST day it holds, never before
  ``effective_from``. A suspension (暂停) always has an end date, so SUSPENDED
  without ``effective_until`` is refused; TERMINATED is normally open-ended
  (until re-registered) but an end date is honoured if given.
- ``reference`` is the decision's document number, required for audit.
- Two records for the same practitioner with the same ``effective_from``
  contradict each other (which one holds?) and are refused, naming both lines.
- A practitioner absent from the registry is refused: a sanction on an
  unknown code is a typo more often than not, and would be silently lost.

Records are painted in order of ``effective_from`` by ``loader.timeline``
(a later-starting record overrides an earlier one from its start day on; an
ended record falls back to the earlier records), giving each practitioner's
change points. Validation is vectorised; timelines cost one small sort per
practitioner with records (the feed is small next to the registry).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from contract.codes import decode_practitioner
from contract.days import DAY_NONE
from contract.domain import Status
from contract.errors import LoadError
from loader.columns import day_numbers, enum_values, nonempty_strings, practitioner_keys
from loader.tables import FileFormat, Lines, Table, read_table
from loader.timeline import StatusChange, StatusInterval, build_timeline

REQUIRED_FIELDS = ("practitioner_code", "status", "effective_from", "reference")
OPTIONAL_FIELDS = ("effective_until",)
FEED_STATUSES: dict[str, int] = {
    "ACTIVE": Status.ACTIVE,
    "WARNED": Status.WARNED,
    "SUSPENDED": Status.SUSPENDED,
    "TERMINATED": Status.TERMINATED,
}

Timelines = dict[int, list[StatusChange]]


@dataclass(frozen=True)
class StatusFeed:
    """The feed's records as columns, one entry per record, in file order."""

    file: str
    practitioner: npt.NDArray[np.uint64]  # contract.codes key
    status: npt.NDArray[np.uint8]  # contract.domain.Status
    effective_from: npt.NDArray[np.uint16]  # first day
    effective_until: npt.NDArray[np.uint16]  # last day; DAY_NONE = open-ended
    reference: Any  # pyarrow ChunkedArray of strings
    lines: Lines

    def __len__(self) -> int:
        return len(self.lines)


def read_status_feed(
    path: Path | str,
    registered: npt.NDArray[np.uint64],
    *,
    file_format: FileFormat | None = None,
) -> StatusFeed:
    """Read and validate a status feed against the registry's sorted practitioner keys."""
    table = read_table(path, REQUIRED_FIELDS, OPTIONAL_FIELDS, file_format=file_format)
    return status_feed_from_table(table, registered)


def status_feed_from_table(table: Table, registered: npt.NDArray[np.uint64]) -> StatusFeed:
    """Validate the feed's columns (see the module docstring for the rules).

    ``registered`` is the sorted array of every practitioner key in the registry.
    """
    practitioner = practitioner_keys(table, "practitioner_code")
    _check_known(table, practitioner, registered)
    status = enum_values(table, "status", FEED_STATUSES, np.uint8)
    effective_from = day_numbers(table, "effective_from")
    effective_until = day_numbers(table, "effective_until", optional=True)
    reference = nonempty_strings(table, "reference")

    open_suspension = (status == Status.SUSPENDED) & (effective_until == DAY_NONE)
    if open_suspension.any():
        row = int(np.flatnonzero(open_suspension)[0])
        raise table.error(
            row, "effective_until", "a SUSPENDED record needs an end date (its last day)"
        )
    # DAY_NONE (open) is the largest uint16, so open records pass.
    backwards = effective_until < effective_from
    if backwards.any():
        row = int(np.flatnonzero(backwards)[0])
        raise table.error(
            row,
            "effective_until",
            f"{table.value(row, 'effective_until')} is before effective_from "
            f"{table.value(row, 'effective_from')}",
        )
    _check_conflicts(table, practitioner, effective_from)
    return StatusFeed(
        file=table.file,
        practitioner=practitioner,
        status=status,
        effective_from=effective_from,
        effective_until=effective_until,
        reference=reference,
        lines=table.lines,
    )


def _check_known(
    table: Table, practitioner: npt.NDArray[np.uint64], registered: npt.NDArray[np.uint64]
) -> None:
    if len(registered) == 0:
        known = np.zeros(len(practitioner), dtype=bool)
    else:
        at = np.minimum(np.searchsorted(registered, practitioner), len(registered) - 1)
        known = registered[at] == practitioner
    if not known.all():
        row = int(np.flatnonzero(~known)[0])
        code = decode_practitioner(int(practitioner[row]))
        raise table.error(
            row, "practitioner_code", f"unknown practitioner {code}: not in the registry"
        )


def _check_conflicts(
    table: Table, practitioner: npt.NDArray[np.uint64], effective_from: npt.NDArray[np.uint16]
) -> None:
    """Refuse two records of one practitioner starting the same day, naming both lines."""
    order = np.lexsort((table.lines, effective_from, practitioner))
    same = (practitioner[order][1:] == practitioner[order][:-1]) & (
        effective_from[order][1:] == effective_from[order][:-1]
    )
    if not same.any():
        return
    # Of all clashing pairs, report the one whose later record comes first in the file.
    firsts, seconds = order[:-1][same], order[1:][same]
    k = int(np.argmin(table.lines[seconds]))
    first, second = int(firsts[k]), int(seconds[k])
    code = table.value(second, "practitioner_code")
    raise LoadError(
        table.file,
        table.line_of(second),
        "effective_from",
        f"conflicting records for {code} both effective from "
        f"{table.value(second, 'effective_from')}: lines {table.line_of(first)} "
        f"and {table.line_of(second)}",
    )


def feed_timelines(feed: StatusFeed) -> Timelines:
    """Each practitioner's change points, painted from the feed's records.

    Practitioners whose records leave them ACTIVE throughout get no entry.
    """
    order = np.lexsort((feed.effective_from, feed.practitioner))
    practitioner = feed.practitioner[order]
    starts = feed.effective_from[order].tolist()
    untils = feed.effective_until[order].tolist()
    statuses = [Status(s) for s in feed.status[order].tolist()]
    bounds = np.flatnonzero(practitioner[1:] != practitioner[:-1]) + 1
    timelines: Timelines = {}
    for lo, hi in zip([0, *bounds.tolist()], [*bounds.tolist(), len(practitioner)], strict=True):
        if lo == hi:
            continue
        changes = build_timeline(
            StatusInterval(starts[k], untils[k], statuses[k]) for k in range(lo, hi)
        )
        if changes:
            timelines[int(practitioner[lo])] = changes
    return timelines
