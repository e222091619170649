"""Live changes on top of a snapshot: the overlay, and the index that reads it first.

A change is the complete new record of a few practitioners (registrations,
status change points, points change points) in the snapshot's own array
format (``gateway.snapshot``), over just those practitioners. The overlay is
all the changes published on top of one snapshot, merged: a second change to
a practitioner replaces the first. ``LayeredIndex`` answers from the overlay
for the practitioners it holds and from the snapshot for everyone else.

Goals: applying a change never touches the 15-million-entry snapshot arrays
(O(K log K) numpy for an overlay of K practitioners, built copy-on-write and
installed by one assignment like a new snapshot), and the decision path stays
vectorised: one extra ``searchsorted`` over the K overlay codes per batch,
none at all while the overlay is empty.

``index_version`` (what every response reports) is
``snapshot_version * CHANGE_SEQ_BASE + change_seq``: snapshot 7 with 15
changes applied reads ``7000000015``. It only goes up: change sequences
restart at 1 on each snapshot, whose version is greater.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import SnapshotError
from .index import Int64s, LineLookup, Lookup, StatusIndex
from .snapshot import ARRAY_DTYPES, DAY_BITS, Arrays, empty_arrays, validate_arrays

CHANGE_SEQ_BASE = 1_000_000_000
_DAY_MASK = np.uint64((1 << DAY_BITS) - 1)


def index_version(snapshot_version: int, change_seq: int) -> int:
    """The ``index_version`` of a snapshot with ``change_seq`` changes applied."""
    if not 0 <= change_seq < CHANGE_SEQ_BASE:
        raise ValueError(f"change sequence {change_seq} outside 0..{CHANGE_SEQ_BASE - 1}")
    return snapshot_version * CHANGE_SEQ_BASE + change_seq


def split_index_version(version: int) -> tuple[int, int]:
    """(snapshot version, change sequence) of an ``index_version``."""
    return divmod(version, CHANGE_SEQ_BASE)


def encode_arrays(arrays: Arrays) -> dict[str, bytes]:
    """The arrays as ``a:{name}`` -> raw little-endian bytes (stream entry / hash fields)."""
    return {f"a:{name}": np.ascontiguousarray(arrays[name]).tobytes() for name in ARRAY_DTYPES}


def decode_arrays(fields: Mapping[bytes, bytes], what: str) -> Arrays:
    """Arrays from ``encode_arrays`` fields, validated; ``SnapshotError`` naming ``what``."""
    arrays: Arrays = {}
    for name, dtype in ARRAY_DTYPES.items():
        raw = fields.get(f"a:{name}".encode())
        if raw is None:
            raise SnapshotError(f"{what}: array {name} is missing")
        item = np.dtype(dtype).itemsize
        if len(raw) % item:
            raise SnapshotError(f"{what}: array {name} has {len(raw)} bytes, not whole {dtype}")
        arrays[name] = np.frombuffer(raw, dtype=dtype)
    try:
        validate_arrays(arrays)
    except SnapshotError as exc:
        raise SnapshotError(f"{what}: {exc}") from exc
    return arrays


def merge_changes(overlay: Arrays, change: Arrays) -> Arrays:
    """``overlay`` with ``change`` applied: the change's practitioners replace theirs.

    Both are snapshot-format arrays over a few practitioners; the result is
    a new set of arrays (neither input is modified). Vectorised: no Python
    loop per practitioner or registration.
    """
    replaced = np.isin(overlay["prac_codes"], change["prac_codes"])
    parts = [(overlay, ~replaced), (change, np.ones(len(change["prac_codes"]), dtype=np.bool_))]
    Parts = list[npt.NDArray[Any]]
    codes: Parts = []
    reg_code: Parts = []
    reg_inst: Parts = []
    reg_from: Parts = []
    reg_until: Parts = []
    st_code: Parts = []
    st_day: Parts = []
    st_status: Parts = []
    st_until: Parts = []
    pt_code: Parts = []
    pt_day: Parts = []
    pt_points: Parts = []
    for arrays, kept in parts:
        prac = arrays["prac_codes"]
        codes.append(prac[kept])
        counts = np.diff(arrays["reg_offsets"].astype(np.int64))
        reg_row = np.repeat(np.arange(len(prac)), counts)
        reg_kept = kept[reg_row]
        reg_code.append(prac[reg_row[reg_kept]])
        reg_inst.append(arrays["inst_codes"][arrays["reg_inst"][reg_kept]])
        reg_from.append(arrays["reg_from"][reg_kept])
        reg_until.append(arrays["reg_until"][reg_kept])
        for key_name, code_out, day_out in (
            ("st_key", st_code, st_day),
            ("pt_key", pt_code, pt_day),
        ):
            keys = arrays[key_name]
            rows = (keys >> np.uint64(DAY_BITS)).astype(np.int64)
            mask = kept[rows]
            code_out.append(prac[rows[mask]])
            day_out.append(keys[mask] & _DAY_MASK)
            if key_name == "st_key":
                st_status.append(arrays["st_status"][mask])
                st_until.append(arrays["st_until"][mask])
            else:
                pt_points.append(arrays["pt_points"][mask])
    prac_codes = np.sort(np.concatenate(codes)).astype("<u8")
    all_reg_code = np.concatenate(reg_code)
    all_reg_from = np.concatenate(reg_from)
    order = np.lexsort((all_reg_from, all_reg_code))
    reg_rows = np.searchsorted(prac_codes, all_reg_code[order])
    all_inst = np.concatenate(reg_inst)[order]
    inst_codes = np.unique(all_inst).astype("<u8")
    merged: Arrays = {
        "prac_codes": prac_codes,
        "reg_offsets": np.searchsorted(reg_rows, np.arange(len(prac_codes) + 1)).astype("<u4"),
        "reg_inst": np.searchsorted(inst_codes, all_inst).astype("<u4"),
        "reg_from": all_reg_from[order].astype("<u2"),
        "reg_until": np.concatenate(reg_until)[order].astype("<u2"),
        "inst_codes": inst_codes,
    }
    for prefix, code_parts, day_parts, values in (
        ("st", st_code, st_day, {"st_status": st_status, "st_until": st_until}),
        ("pt", pt_code, pt_day, {"pt_points": pt_points}),
    ):
        rows = np.searchsorted(prac_codes, np.concatenate(code_parts)).astype(np.uint64)
        keys = (rows << np.uint64(DAY_BITS)) | np.concatenate(day_parts).astype(np.uint64)
        key_order = np.argsort(keys, kind="stable")
        merged[f"{prefix}_key"] = keys[key_order].astype("<u8")
        for name, value_parts in values.items():
            merged[name] = np.concatenate(value_parts)[key_order].astype(ARRAY_DTYPES[name])
    validate_arrays(merged)
    return merged


def overlay_index(arrays: Arrays) -> StatusIndex:
    """The overlay's own little index (its rows and institutions are its own)."""
    return StatusIndex(arrays, 0, {"has_points": True})


EMPTY_OVERLAY: Arrays = empty_arrays()


class LayeredIndex(StatusIndex):
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
        # Not StatusIndex.__init__: the base's arrays are validated already,
        # and re-checking 15 million entries per change is what this avoids.
        self.base = base
        self.overlay_arrays = overlay if overlay is not None else EMPTY_OVERLAY
        self.overlay = overlay_index(self.overlay_arrays)
        self.snapshot_version = base.version
        self.change_seq = change_seq
        self.stream_id = stream_id  # the change stream entry this index includes
        self.version = index_version(base.version, change_seq)
        self.meta = base.meta
        self.has_points = base.has_points
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
    def overlay_practitioners(self) -> int:
        return self._overlay_rows

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
