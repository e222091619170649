"""The live-change format: a few practitioners' complete new records on top
of a snapshot, and how changes merge into that snapshot's overlay.

A change is the complete new record of a few practitioners (registrations,
status change points, points change points) in the snapshot's own array
format (``contract.snapshot``), over just those practitioners. The overlay is
all the changes published on top of one snapshot, merged: a second change to
a practitioner replaces the first. The loader writes changes (``loader.changes``);
the gateway reads the overlay before the snapshot (``gateway.index.LayeredIndex``).

Stream entries (``{prefix}:changes``) are ``kind=snapshot, version=v`` (a
flip: reload; it carries no data, so it needs no signature: the reload
verifies the manifest) or ``kind=change, base, seq, epoch,
published_at_ns, key_id, sig, a:{array}...``. The overlay hash of version v
holds ``seq, id, epoch, key_id, sig, a:{array}...``. The signature covers
``signed_body``: kind, base, seq, epoch (and the publication time of a
change) and the SHA-256 of every array, so a change cannot be forged,
replayed onto another snapshot or dataset, or renumbered.

``index_version`` (what every response reports) is
``snapshot_version * CHANGE_SEQ_BASE + change_seq``: snapshot 7 with 15
changes applied reads ``7000000015``. It only goes up: change sequences
restart at 1 on each snapshot, whose version is greater.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import SnapshotError
from .signing import Signer, Verifier
from .snapshot import (
    ARRAY_DTYPES,
    DAY_BITS,
    Arrays,
    array_bytes,
    array_digest,
    array_from_bytes,
    empty_arrays,
    validate_arrays,
)

CHANGE_SEQ_BASE = 1_000_000_000
MAX_PUBLISHED_AT_NS = 1 << 63
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


def signed_body(
    kind: str, base: int, seq: int, epoch: str, arrays: Arrays, published_at_ns: int = 0
) -> dict[str, Any]:
    """What the loader signs for a change entry (kind "change") or an overlay hash
    (kind "overlay") and a gateway verifies (``contract.signing``)."""
    return {
        "kind": kind,
        "base": base,
        "seq": seq,
        "epoch": epoch,
        "published_at_ns": published_at_ns,
        "arrays": {name: array_digest(arrays[name]) for name in ARRAY_DTYPES},
    }


def signature_fields(signer: Signer | None, body: dict[str, Any]) -> dict[str, bytes]:
    """``key_id`` and ``sig`` fields of a signed entry (none when unsigned)."""
    if signer is None:
        return {}
    signed = signer.sign(body)
    return {"key_id": signed["key_id"].encode(), "sig": signed["signature"].encode()}


@dataclass(frozen=True)
class ChangeEntry:
    """A verified ``kind=change`` stream entry."""

    base: int
    seq: int
    epoch: str
    published_at_ns: int
    arrays: Arrays


@dataclass(frozen=True)
class SnapshotMarker:
    """A ``kind=snapshot`` stream entry: version ``version`` became current."""

    version: int


def field_int(fields: Mapping[bytes, bytes], name: str, what: str, limit: int = 1 << 62) -> int:
    """A non-negative integer field below ``limit``; ``SnapshotError`` naming it otherwise."""
    raw = fields.get(name.encode())
    text = raw.decode("ascii", "replace") if raw is not None else ""
    if not (text.isascii() and text.isdigit() and len(text) <= 19) or int(text) >= limit:
        shown = "missing" if raw is None else repr(text[:40])
        raise SnapshotError(f"{what}: field {name} is {shown}, not a number below {limit}")
    return int(text)


def field_text(fields: Mapping[bytes, bytes], name: str, what: str) -> str:
    raw = fields.get(name.encode())
    if raw is None or len(raw) > 200:
        raise SnapshotError(f"{what}: field {name} is missing or too long")
    return raw.decode("ascii", "replace")


def verify_fields(
    fields: Mapping[bytes, bytes], body: dict[str, Any], verifier: Verifier | None, what: str
) -> None:
    """Check the entry's signature over ``body``; with no verifier (``--allow-unsigned``)
    a signature, when present, is not checked."""
    if verifier is None:
        return
    signed = {
        "key_id": fields.get(b"key_id", b"").decode("ascii", "replace") or None,
        "signature": fields.get(b"sig", b"").decode("ascii", "replace") or None,
    }
    verifier.verify(body, signed, what)


def decode_entry(
    fields: Mapping[bytes, bytes], what: str, verifier: Verifier | None
) -> ChangeEntry | SnapshotMarker:
    """One stream entry, parsed strictly and verified; ``SnapshotError`` naming ``what``
    (and ``SignatureError`` for a forged or unsigned change) if it is not one we published."""
    kind = fields.get(b"kind")
    if kind == b"snapshot":
        return SnapshotMarker(field_int(fields, "version", what))
    if kind != b"change":
        raise SnapshotError(f"{what}: unknown kind {kind!r:.40}")
    base = field_int(fields, "base", what)
    seq = field_int(fields, "seq", what, CHANGE_SEQ_BASE)
    epoch = field_text(fields, "epoch", what)
    published_at_ns = field_int(fields, "published_at_ns", what, MAX_PUBLISHED_AT_NS)
    arrays = decode_arrays(fields, what)
    body = signed_body("change", base, seq, epoch, arrays, published_at_ns)
    verify_fields(fields, body, verifier, what)
    return ChangeEntry(base, seq, epoch, published_at_ns, arrays)


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
