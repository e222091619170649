"""The in-memory status index: who is registered where, and their status on
any day, for 15-20 million practitioners.

Goals: no Python object per practitioner, no Redis call, and one vectorised
pass per batch of lines. The arrays are exactly the snapshot's
(``gateway.snapshot``), read zero-copy from the bytes Redis returned; about
22 bytes per practitioner with 1.2 registrations each.

Complexity per batch of L lines: one ``searchsorted`` over the practitioner
codes (O(L log N)), one over the status change points (O(L log S)), and one
pass per registration slot up to the batch's largest registration count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .days import DAY_NONE, year_of_day
from .domain import Status
from .snapshot import DAY_BITS, Arrays, validate_arrays

Int64s = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
UInt8s = npt.NDArray[np.uint8]
UInt16s = npt.NDArray[np.uint16]


@dataclass(frozen=True)
class Lookup:
    """Everything the decision rules need about a batch of lines."""

    found: Bools  # the practitioner is in the index
    registered: Bools  # registered somewhere on the day
    at_institution: Bools  # registered at the given institution on the day
    status: UInt8s  # Status on the day (SUSPENDED/TERMINATED win over registration)
    until: UInt16s  # last day of a suspension, DAY_NONE otherwise


class StatusIndex:
    """Read-only lookups over one published snapshot."""

    def __init__(self, arrays: Arrays, version: int, meta: dict[str, Any] | None = None) -> None:
        validate_arrays(arrays)
        self.version = version
        self.meta = meta or {}
        self.codes: npt.NDArray[np.uint64] = arrays["prac_codes"]
        self.reg_offsets: npt.NDArray[np.uint32] = arrays["reg_offsets"]
        self.reg_inst: npt.NDArray[np.uint32] = arrays["reg_inst"]
        self.reg_from: npt.NDArray[np.uint16] = arrays["reg_from"]
        self.reg_until: npt.NDArray[np.uint16] = arrays["reg_until"]
        self.inst_codes: npt.NDArray[np.uint64] = arrays["inst_codes"]
        self.st_key: npt.NDArray[np.uint64] = arrays["st_key"]
        self.st_status: npt.NDArray[np.uint8] = arrays["st_status"]
        self.st_until: npt.NDArray[np.uint16] = arrays["st_until"]
        self.pt_key: npt.NDArray[np.uint64] = arrays["pt_key"]
        self.pt_points: npt.NDArray[np.uint16] = arrays["pt_points"]
        self.has_points = bool(self.meta.get("has_points", len(self.pt_key) > 0))
        self._arrays = arrays

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self._arrays.values())

    def institution_id(self, key: int) -> int:
        """Row of an institution key in ``inst_codes``, or -1 if no one is registered there."""
        if key < 0:
            return -1
        pos = int(np.searchsorted(self.inst_codes, np.uint64(key)))
        if pos < len(self.inst_codes) and int(self.inst_codes[pos]) == key:
            return pos
        return -1

    def rows(self, keys: Int64s) -> Int64s:
        """Row of each practitioner key, -1 where unknown or the key is -1 (malformed)."""
        n = len(self.codes)
        if n == 0:
            return np.full(len(keys), -1, dtype=np.int64)
        safe = np.where(keys >= 0, keys, 0).astype(np.uint64)
        pos = np.searchsorted(self.codes, safe).astype(np.int64)
        clipped = np.minimum(pos, n - 1)
        hit = (pos < n) & (self.codes[clipped] == safe) & (keys >= 0)
        return np.where(hit, clipped, -1)

    def lookup(self, rows: Int64s, days: Int64s, institution_id: int) -> Lookup:
        """Registration and status of each (row, day); rows of -1 are not found."""
        found = rows >= 0
        safe_rows = np.where(found, rows, 0)
        registered, at_inst = self._registrations(safe_rows, found, days, institution_id)
        status, until = self._timeline(safe_rows, found, days)
        # A sanction is about the person and outlives registration; otherwise
        # no registration on the day means NOT_REGISTERED.
        sanctioned = (status == Status.SUSPENDED) | (status == Status.TERMINATED)
        status = np.where(sanctioned | registered, status, np.uint8(Status.NOT_REGISTERED))
        return Lookup(found, registered, at_inst, status.astype(np.uint8), until)

    def _registrations(
        self, rows: Int64s, found: Bools, days: Int64s, institution_id: int
    ) -> tuple[Bools, Bools]:
        if len(self.codes) == 0:
            none = np.zeros(len(rows), dtype=np.bool_)
            return none, none.copy()
        start = self.reg_offsets[rows].astype(np.int64)
        count = np.where(found, self.reg_offsets[rows + 1].astype(np.int64) - start, 0)
        registered = np.zeros(len(rows), dtype=np.bool_)
        at_inst = np.zeros(len(rows), dtype=np.bool_)
        last = max(len(self.reg_inst) - 1, 0)
        for slot in range(int(count.max()) if len(count) else 0):
            has = count > slot
            idx = np.minimum(start + slot, last)
            active = (
                has
                & (self.reg_from[idx] <= days)
                & ((self.reg_until[idx] == DAY_NONE) | (days < self.reg_until[idx]))
            )
            registered |= active
            if institution_id >= 0:
                at_inst |= active & (self.reg_inst[idx] == institution_id)
        return registered, at_inst

    def _timeline(
        self, rows: Int64s, found: Bools, days: Int64s
    ) -> tuple[npt.NDArray[np.uint8], UInt16s]:
        n = len(rows)
        status = np.full(n, np.uint8(Status.ACTIVE), dtype=np.uint8)
        until = np.full(n, DAY_NONE, dtype=np.uint16)
        if len(self.st_key) == 0 or n == 0:
            return status, until
        query = (rows.astype(np.uint64) << np.uint64(DAY_BITS)) | days.astype(np.uint64)
        pos = np.searchsorted(self.st_key, query, side="right").astype(np.int64) - 1
        safe = np.maximum(pos, 0)
        same_row = (self.st_key[safe] >> np.uint64(DAY_BITS)) == rows.astype(np.uint64)
        hit = found & (pos >= 0) & same_row
        status = np.where(hit, self.st_status[safe], status).astype(np.uint8)
        until = np.where(hit, self.st_until[safe], until).astype(np.uint16)
        return status, until

    def institutions_on(self, row: int, day: int) -> list[int]:
        """Institution keys the practitioner at ``row`` is registered at on ``day``."""
        if row < 0:
            return []
        start, end = int(self.reg_offsets[row]), int(self.reg_offsets[row + 1])
        keys = []
        for i in range(start, end):
            reg_until = int(self.reg_until[i])
            if self.reg_from[i] <= day and (reg_until == DAY_NONE or day < reg_until):
                keys.append(int(self.inst_codes[self.reg_inst[i]]))
        return sorted(set(keys))

    def points_on(self, row: int, day: int) -> int | None:
        """The calendar year's points total on ``day``; None if the data has no ledger."""
        if not self.has_points or row < 0:
            return None
        query = np.uint64((row << DAY_BITS) | day)
        pos = int(np.searchsorted(self.pt_key, query, side="right")) - 1
        if pos < 0 or int(self.pt_key[pos]) >> DAY_BITS != row:
            return 0
        point_day = int(self.pt_key[pos]) & ((1 << DAY_BITS) - 1)
        if year_of_day(point_day) != year_of_day(day):
            return 0
        return int(self.pt_points[pos])


class IndexHolder:
    """The index that decides now. Swapped by one attribute assignment, which
    is atomic in CPython: a request reads ``holder.current`` once and decides
    every line from that one snapshot."""

    def __init__(self) -> None:
        self.current: StatusIndex | None = None

    @property
    def version(self) -> int:
        return self.current.version if self.current is not None else 0

    def swap(self, index: StatusIndex) -> bool:
        """Install ``index`` if it is newer than the current one (versions only go up)."""
        if self.current is not None and index.version <= self.current.version:
            return False
        self.current = index
        return True
