"""The live-change format: a few practitioners' complete new records on top
of a snapshot, and how changes merge into that snapshot's overlay.

A change is the complete new record of a few practitioners (registrations,
status change points, points change points) in the snapshot's own array
format (``contract.snapshot``), over just those practitioners. The overlay is
all the changes published on top of one snapshot, merged: a second change to
a practitioner replaces the first. The loader writes changes (``loader.changes``);
the gateway reads the overlay before the snapshot (``gateway.index.LayeredIndex``).

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
from .snapshot import (
    ARRAY_DTYPES,
    DAY_BITS,
    Arrays,
    array_bytes,
    array_from_bytes,
    empty_arrays,
    validate_arrays,
)

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
    """The arrays as ``a:{name}`` -> their bytes (stream entry / overlay hash fields)."""
    return {f"a:{name}": bytes(array_bytes(arrays[name])) for name in ARRAY_DTYPES}


def decode_arrays(fields: Mapping[bytes, bytes], what: str) -> Arrays:
    """Arrays from ``encode_arrays`` fields, validated; ``SnapshotError`` naming ``what``."""
    arrays: Arrays = {}
    try:
        for name in ARRAY_DTYPES:
            raw = fields.get(f"a:{name}".encode())
            if raw is None:
                raise SnapshotError(f"array {name} is missing")
            arrays[name] = array_from_bytes(name, raw)
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


EMPTY_OVERLAY: Arrays = empty_arrays()
