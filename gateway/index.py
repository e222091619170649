"""The in-memory status index: who is registered where, and their status on
any day, for 15-20 million practitioners.

Goals: no Python object per practitioner, no Redis call, and one vectorised
pass per batch of lines. The arrays are exactly the snapshot's
(``contract.snapshot``), read zero-copy from the bytes Redis returned; about
22 bytes per practitioner with 1.2 registrations each.

Complexity per batch of L lines: one search of the practitioner codes
(O(L log N)), one of the status change points (O(L log S)), and one pass per
registration slot up to the batch's largest registration count. Batches of
256 lines or more search in two levels (a cached sample, then one block:
``_search``), which keeps the random cache misses per line few. Small claims
take the scalar path instead (``row_of``, ``lookup_line``): plain Python over
memoryviews of the same arrays, ~3 µs per line against the ~60 µs fixed cost
of the vectorised pass (bench/test_micro.py).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from contract.changes import EMPTY_OVERLAY, index_version, merge_changes
from contract.days import DAY_NONE, year_of_day
from contract.domain import Status
from contract.snapshot import DAY_BITS, Arrays, validate_arrays

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


# Scalar lookup of one line: (registered, at_institution, status, until).
LineLookup = tuple[bool, bool, int, int]


_FORMATS: dict[str, Literal["B", "H", "I", "Q"]] = {"u1": "B", "u2": "H", "u4": "I", "u8": "Q"}


def _ints(array: npt.NDArray[Any]) -> Sequence[int]:
    """A native-format memoryview of a 1-d little-endian array (Python ints on indexing)."""
    raw = np.ascontiguousarray(array).data.cast("B")
    return raw.cast(_FORMATS[array.dtype.str[1:]])


# Fast path for large batches: a sorted array's every SAMPLE_STEP-th entry
# (470 KB for 15 million codes: stays in cache) is searched first, then the
# one block of SAMPLE_STEP entries it points to, in log2(SAMPLE_STEP)
# vectorised steps. np.searchsorted over the whole array costs a cache miss
# per step for random keys (~1.5 µs per key at 15 million); this costs ~0.1 µs.
SAMPLE_STEP = 256
TWO_LEVEL_MIN_BATCH = 256


def _search(
    a: npt.NDArray[np.uint64],
    sample: npt.NDArray[np.uint64],
    query: npt.NDArray[np.uint64],
    side: Literal["left", "right"],
) -> Int64s:
    """``np.searchsorted(a, query, side)`` for ``sample = a[::SAMPLE_STEP]``."""
    if len(query) < TWO_LEVEL_MIN_BATCH or len(a) <= SAMPLE_STEP:
        return np.searchsorted(a, query, side=side).astype(np.int64)
    right = side == "right"
    # a[(block - 1) * SAMPLE_STEP] passes the test (< query, or <= for "right"),
    # a[block * SAMPLE_STEP] fails it: the answer lies in one block.
    block = np.searchsorted(sample, query, side=side).astype(np.int64)
    # The last entry known to pass; in the final, partial block, moved back
    # so that the block lies inside ``a`` (an earlier entry passes too).
    last = np.minimum(np.maximum(block - 1, 0) * SAMPLE_STEP, len(a) - SAMPLE_STEP)
    step = SAMPLE_STEP // 2
    while step:
        candidate = last + step
        value = a[candidate]
        last = np.where((value <= query) if right else (value < query), candidate, last)
        step //= 2
    return np.where(block > 0, last + 1, 0)


class StatusIndex:
    """Read-only lookups over one published snapshot."""

    def __init__(
        self,
        arrays: Arrays,
        version: int,
        meta: dict[str, Any] | None = None,
        *,
        validated: bool = False,
    ) -> None:
        """``validated``: the arrays passed ``validate_arrays`` already (every reader
        of ``contract`` and ``merge_changes`` check them): not checked twice, which
        at 15 M practitioners is a tenth of the load."""
        if not validated:
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
        self.arrays = arrays  # the snapshot's arrays, as published (read-only)
        # The compiled claim path's packed records of this snapshot, and its view
        # of this index (gateway.claimpath: built once, when the index is swapped in).
        self.packed: Any = None
        self.compiled: Any = None
        # With --workers: maps the packed table from the workers' shared file
        # (gateway.ops.shared_index.SharedSnapshots.share_table); None: build it.
        self.share_packed: Callable[[Callable[[], Any]], Any] | None = None
        # Fast path: memoryviews of the same bytes for the scalar lookups of
        # small claims; indexing one yields a Python int in ~40 ns, where a
        # numpy call costs ~1 µs (bisect over them: ~1.5 µs per lookup).
        self._codes = _ints(self.codes)
        self._codes_sample = self.codes[::SAMPLE_STEP].copy()
        self._st_key_sample = self.st_key[::SAMPLE_STEP].copy()
        self._inst_codes = _ints(self.inst_codes)
        self._reg_offsets = _ints(self.reg_offsets)
        self._reg_inst = _ints(self.reg_inst)
        self._reg_from = _ints(self.reg_from)
        self._reg_until = _ints(self.reg_until)
        self._st_key = _ints(self.st_key)
        self._st_status = _ints(self.st_status)
        self._st_until = _ints(self.st_until)

    @property
    def snapshot_version(self) -> int:
        return self.version

    @property
    def change_seq(self) -> int:
        return 0

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self.arrays.values())

    def institution_id(self, key: int) -> int:
        """Row of an institution key in ``inst_codes``, or -1 if no one is registered there."""
        if key < 0:
            return -1
        # Fast path: bisect over a memoryview (no numpy call per claim).
        inst_codes = self._inst_codes
        pos = bisect.bisect_left(inst_codes, key)
        return pos if pos < len(inst_codes) and inst_codes[pos] == key else -1

    def rows(self, keys: Int64s) -> Int64s:
        """Row of each practitioner key, -1 where unknown or the key is -1 (malformed)."""
        n = len(self.codes)
        if n == 0:
            return np.full(len(keys), -1, dtype=np.int64)
        # Negative keys (malformed, empty) wrap to values above every code: never found.
        query = keys.astype(np.uint64)
        clipped = np.minimum(_search(self.codes, self._codes_sample, query, "left"), n - 1)
        return np.where(self.codes[clipped] == query, clipped, -1)

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
            # Fast path: the first slot for every line at once; later ones (15 %
            # of practitioners have a second registration) only for the lines
            # that have them: random gathers over 15 million entries dominate.
            if slot == 0:
                lines: slice | Int64s = slice(None)
                has: Bools | bool = count > 0
                idx = np.minimum(start, last)
            else:
                lines = np.flatnonzero(count > slot)
                has = True
                idx = start[lines] + slot
            day = days[lines]
            until = self.reg_until[idx]
            active = has & (self.reg_from[idx] <= day) & ((until == DAY_NONE) | (day < until))
            registered[lines] |= active
            if institution_id >= 0:
                at_inst[lines] |= active & (self.reg_inst[idx] == institution_id)
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
        pos = _search(self.st_key, self._st_key_sample, query, "right") - 1
        safe = np.maximum(pos, 0)
        same_row = (self.st_key[safe] >> np.uint64(DAY_BITS)) == (query >> np.uint64(DAY_BITS))
        hit = found & (pos >= 0) & same_row
        status = np.where(hit, self.st_status[safe], status).astype(np.uint8)
        until = np.where(hit, self.st_until[safe], until).astype(np.uint16)
        return status, until

    def row_of(self, key: int) -> int:
        """Scalar ``rows``: the row of one practitioner key, -1 if unknown or negative."""
        if key < 0:
            return -1
        codes = self._codes
        pos = bisect.bisect_left(codes, key)
        return pos if pos < len(codes) and codes[pos] == key else -1

    def lookup_line(self, row: int, day: int, institution_id: int) -> LineLookup:
        """Scalar ``lookup`` of one (row, day): (registered, at_institution, status, until).

        Fast path for small claims, in plain Python over memoryviews: it must
        answer exactly what ``lookup`` answers for a batch of one (a property
        test checks it: tests/test_decide_scalar.py)."""
        if row < 0:
            return False, False, int(Status.NOT_REGISTERED), DAY_NONE
        registered = at_inst = False
        reg_from, reg_until, reg_inst = self._reg_from, self._reg_until, self._reg_inst
        for i in range(self._reg_offsets[row], self._reg_offsets[row + 1]):
            end = reg_until[i]
            if reg_from[i] <= day and (end == DAY_NONE or day < end):
                registered = True
                if reg_inst[i] == institution_id:
                    at_inst = True
                    break
        status, until = int(Status.ACTIVE), DAY_NONE
        st_key = self._st_key
        pos = bisect.bisect_right(st_key, (row << DAY_BITS) | day) - 1
        if pos >= 0 and st_key[pos] >> DAY_BITS == row:
            status, until = self._st_status[pos], self._st_until[pos]
        if not registered and status != Status.SUSPENDED and status != Status.TERMINATED:
            status = Status.NOT_REGISTERED
        return registered, at_inst, int(status), until

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


# Live changes: the overlay of changed practitioners, read before the snapshot
# (contract.changes has the format and the merge).


def overlay_index(arrays: Arrays) -> StatusIndex:
    """The overlay's own little index (its rows and institutions are its own)."""
    return StatusIndex(arrays, 0, {"has_points": True})  # small: checked every time


class LayeredIndex:
    """A snapshot's index with an overlay of changed practitioners read first.

    Same lookups as ``StatusIndex``, and what the ``IndexHolder`` holds in a
    running gateway. Rows ``>= len(base)`` are overlay rows; institution ids
    ``>= len(base.inst_codes)`` are institutions only the overlay knows.
    The base's arrays are deliberately not exposed as attributes: code that
    reads them directly would miss the overlay, so it fails loudly instead.
    """

    def __init__(
        self,
        base: StatusIndex,
        overlay: Arrays | None = None,
        change_seq: int = 0,
        stream_id: str = "0-0",
    ) -> None:
        # The base's arrays were validated when it was built; a change
        # re-checks only the overlay's few practitioners, never the 15 million.
        self.base = base
        self.overlay_arrays = overlay if overlay is not None else EMPTY_OVERLAY
        self.overlay = overlay_index(self.overlay_arrays)
        self.snapshot_version = base.version
        self.change_seq = change_seq
        self.stream_id = stream_id  # the change stream entry this index includes
        self.version = index_version(base.version, change_seq)
        self.meta = base.meta
        self.has_points = base.has_points
        self.compiled: Any = None  # the compiled claim path's view (gateway.claimpath)
        self._base_rows = len(base)
        self._base_institutions = len(base.inst_codes)
        self._overlay_rows = len(self.overlay)
        new_codes = self.overlay.codes.astype(np.int64)
        self._added = int(np.count_nonzero(base.rows(new_codes) < 0)) if len(new_codes) else 0

    def with_change(self, change: Arrays, change_seq: int, stream_id: str) -> LayeredIndex:
        """A new index with ``change`` merged into the overlay (this one is unchanged)."""
        merged = merge_changes(self.overlay_arrays, change)
        return LayeredIndex(self.base, merged, change_seq, stream_id)

    def __len__(self) -> int:
        return self._base_rows + self._added

    @property
    def nbytes(self) -> int:
        return self.base.nbytes + self.overlay.nbytes

    def institution_id(self, key: int) -> int:
        found = self.base.institution_id(key)
        if found >= 0 or self._overlay_rows == 0:
            return found
        extra = self.overlay.institution_id(key)
        return self._base_institutions + extra if extra >= 0 else -1

    def rows(self, keys: Int64s) -> Int64s:
        base_rows = self.base.rows(keys)
        if self._overlay_rows == 0:  # Fast path: no change since the snapshot.
            return base_rows
        mine = self.overlay.rows(keys)
        return np.where(mine >= 0, mine + self._base_rows, base_rows)

    def lookup(self, rows: Int64s, days: Int64s, institution_id: int) -> Lookup:
        base_inst = institution_id if institution_id < self._base_institutions else -1
        mine = rows >= self._base_rows
        if self._overlay_rows == 0 or not mine.any():  # Fast path: no changed practitioner.
            return self.base.lookup(rows, days, base_inst)
        theirs = self.base.lookup(np.where(mine, -1, rows), days, base_inst)
        ours = self.overlay.lookup(
            np.where(mine, rows - self._base_rows, -1),
            days,
            self._overlay_institution(institution_id),
        )
        return Lookup(
            found=np.where(mine, ours.found, theirs.found),
            registered=np.where(mine, ours.registered, theirs.registered),
            at_institution=np.where(mine, ours.at_institution, theirs.at_institution),
            status=np.where(mine, ours.status, theirs.status).astype(np.uint8),
            until=np.where(mine, ours.until, theirs.until).astype(np.uint16),
        )

    def row_of(self, key: int) -> int:
        if self._overlay_rows:
            mine = self.overlay.row_of(key)
            if mine >= 0:
                return self._base_rows + mine
        return self.base.row_of(key)

    def lookup_line(self, row: int, day: int, institution_id: int) -> LineLookup:
        if row >= self._base_rows:
            return self.overlay.lookup_line(
                row - self._base_rows, day, self._overlay_institution(institution_id)
            )
        base_inst = institution_id if institution_id < self._base_institutions else -1
        return self.base.lookup_line(row, day, base_inst)

    def _overlay_institution(self, institution_id: int) -> int:
        if institution_id < 0:
            return -1
        if institution_id >= self._base_institutions:
            return institution_id - self._base_institutions
        return self.overlay.institution_id(int(self.base.inst_codes[institution_id]))

    def institutions_on(self, row: int, day: int) -> list[int]:
        if row >= self._base_rows:
            return self.overlay.institutions_on(row - self._base_rows, day)
        return self.base.institutions_on(row, day)

    def points_on(self, row: int, day: int) -> int | None:
        if row >= self._base_rows:
            return self.overlay.points_on(row - self._base_rows, day) if self.has_points else None
        return self.base.points_on(row, day)


class Index(Protocol):
    """What the decisions, the servicer and the metrics read of an index:
    ``StatusIndex`` (one snapshot) and ``LayeredIndex`` (a snapshot with its
    live changes) both provide it."""

    @property
    def version(self) -> int: ...  # index_version: snapshot and change sequence
    @property
    def snapshot_version(self) -> int: ...
    @property
    def change_seq(self) -> int: ...
    @property
    def meta(self) -> dict[str, Any]: ...
    @property
    def has_points(self) -> bool: ...
    @property
    def nbytes(self) -> int: ...

    compiled: Any  # the compiled claim path's view of the index, once built

    def __len__(self) -> int: ...
    def institution_id(self, key: int) -> int: ...
    def rows(self, keys: Int64s) -> Int64s: ...
    def lookup(self, rows: Int64s, days: Int64s, institution_id: int) -> Lookup: ...
    def row_of(self, key: int) -> int: ...
    def lookup_line(self, row: int, day: int, institution_id: int) -> LineLookup: ...
    def institutions_on(self, row: int, day: int) -> list[int]: ...
    def points_on(self, row: int, day: int) -> int | None: ...


class IndexHolder:
    """The index that decides now. Swapped by one attribute assignment, which
    is atomic in CPython: a request reads ``holder.current`` once and decides
    every line from that one snapshot."""

    def __init__(self, prepare: Callable[[Index], None] | None = None) -> None:
        self.current: Index | None = None
        # Builds what the claim path needs of an index before it is swapped in
        # (gateway.claimpath.ClaimPath.prepare).
        self.prepare = prepare

    @property
    def version(self) -> int:
        return self.current.version if self.current is not None else 0

    def swap(self, index: Index, *, force: bool = False) -> bool:
        """Install ``index`` if it is newer than the current one (versions only go up
        inside a dataset epoch; ``force``: a new epoch, whatever its version)."""
        if not force and self.current is not None and index.version <= self.current.version:
            return False
        if self.prepare is not None:
            self.prepare(index)
        self.current = index
        return True
