"""The Redis key schema and the snapshot format: the one contract between the
loader (which writes) and every gateway (which reads).

A snapshot is a set of flat little-endian numpy arrays, published under a
version number that only goes up::

    {prefix}:epoch                             the dataset's identity (SET NX once)
    {prefix}:snapshot:seq                      INCR -> the next version
    {prefix}:snapshot:{v}:manifest             JSON: format, epoch, arrays (length,
                                               chunks, sha256), meta, signature
    {prefix}:snapshot:{v}:{array}:{chunk}      raw bytes, <= CHUNK_BYTES each
    {prefix}:snapshot:current                  the published version (the flip)
    {prefix}:snapshot:{v}:overlay              hash: changes on top of v, merged
    {prefix}:changes                           stream: snapshot markers and changes

Live changes (``contract.changes``, written by ``loader.changes``): each change
to a few practitioners is one ``{prefix}:changes`` entry ``kind=change,
base=v, seq=n, epoch, key_id, sig, a:{array}=...`` (their complete records,
in the arrays below, signed)
and, in the same atomic step, the merged overlay of all of v's changes in the
hash ``snapshot:{v}:overlay`` (fields ``seq``, ``id`` = the entry, and the
arrays). The flip of a snapshot appends ``kind=snapshot, version=v`` and
creates that hash with ``seq`` 0 and ``id`` = the marker: the stream position
the snapshot starts from. Changes apply only on top of their own ``base``; a
new snapshot supersedes them. Only the overlay hash of a version changes
after it is written.

Trust (``contract.signing``): the manifest's signature covers every array
through its SHA-256; readers verify it, the digests and the invariants of
``validate_arrays`` before they use a snapshot (``contract.reads``).

A version's keys are written first and never change afterwards; the single
``SET current`` that publishes it is what makes publication atomic: a gateway
sees the old snapshot or the new one, never a mix. A few large values per
array (not one hash per practitioner) is what lets 15 million practitioners
load in about a second: Redis serves a 120 MB value in ~0.3 s.

The arrays (N practitioners, R registrations, I institutions, S status change
points, P points change points)::

    prac_codes   uint64[N]    sorted practitioner keys (contract.codes)
    reg_offsets  uint32[N+1]  CSR: practitioner i's registrations are
                              reg_*[reg_offsets[i]:reg_offsets[i+1]]
    reg_inst     uint32[R]    row in inst_codes
    reg_from     uint16[R]    first day registered (contract.days day number)
    reg_until    uint16[R]    first day no longer registered; DAY_NONE = open
    inst_codes   uint64[I]    sorted institution keys
    st_key       uint64[S]    sorted (row << 16) | day: a status change point
    st_status    uint8[S]     Status from that day on (until the next point)
    st_until     uint16[S]    last day of the suspension; DAY_NONE if none
    pt_key       uint64[P]    sorted (row << 16) | day: a points change point
    pt_points    uint16[P]    the calendar year's points total from that day

A practitioner with no status change point is ACTIVE; registration is read
from the reg_* arrays alone. Points change points belong to the calendar year
of their day: a lookup that finds a point of an earlier year reads 0.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from .codes import INSTITUTION_DIGITS, PRACTITIONER_DIGITS
from .days import DAY_NONE, MAX_DAY
from .domain import Status
from .errors import SnapshotError
from .signing import Signer

FORMAT = 1
CHUNK_BYTES = 64 * 1024 * 1024
DAY_BITS = 16

ARRAY_DTYPES: dict[str, str] = {
    "prac_codes": "<u8",
    "reg_offsets": "<u4",
    "reg_inst": "<u4",
    "reg_from": "<u2",
    "reg_until": "<u2",
    "inst_codes": "<u8",
    "st_key": "<u8",
    "st_status": "u1",
    "st_until": "<u2",
    "pt_key": "<u8",
    "pt_points": "<u2",
}

Arrays = dict[str, npt.NDArray[Any]]


class Keys:
    """Every Redis key the project uses, under one prefix."""

    def __init__(self, prefix: str) -> None:
        # Characters SCAN MATCH patterns give a meaning to are refused.
        if not prefix or any(c in prefix for c in " *?[]\\"):
            raise ValueError(f"bad Redis key prefix {prefix!r}")
        self.prefix = prefix
        self.seq = f"{prefix}:snapshot:seq"
        self.current = f"{prefix}:snapshot:current"
        # SCAN pattern matching every key of every snapshot version (and seq, current).
        self.snapshot_pattern = f"{prefix}:snapshot:*"
        self.changes = f"{prefix}:changes"
        self.overrides = f"{prefix}:audit:overrides"
        # The dataset's identity: set once (SET NX) by the first publication;
        # a Redis that lost its data gets a new one (see contract.reads).
        self.epoch = f"{prefix}:epoch"

    def manifest(self, version: int) -> str:
        return f"{self.prefix}:snapshot:{version}:manifest"

    def chunk(self, version: int, array: str, index: int) -> str:
        return f"{self.prefix}:snapshot:{version}:{array}:{index}"

    def version_of(self, key: str) -> int | None:
        """The version in ``{prefix}:snapshot:{v}:...``; None for seq and current."""
        rest = key[len(self.prefix) + len(":snapshot:") :]
        head, _, _ = rest.partition(":")
        return int(head) if head.isdigit() else None

    def overlay(self, version: int) -> str:
        """Hash: the changes published on top of ``version``, merged (``contract.changes``)."""
        return f"{self.prefix}:snapshot:{version}:overlay"


@dataclass(frozen=True)
class Manifest:
    """What a snapshot version holds: its arrays' lengths, chunks and SHA-256
    digests, the dataset ``epoch`` it belongs to, and the loader's signature
    over all of it (``contract.signing``; ``signed`` is empty when unsigned)."""

    version: int
    lengths: dict[str, int]
    chunks: dict[str, int]
    created_at: str
    meta: dict[str, Any] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    epoch: str = ""
    signed: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """The manifest without its signature: what the signature covers."""
        return {
            "format": FORMAT,
            "version": self.version,
            "epoch": self.epoch,
            "created_at": self.created_at,
            "arrays": {
                name: {
                    "dtype": ARRAY_DTYPES[name],
                    "length": self.lengths[name],
                    "chunks": self.chunks[name],
                    "sha256": self.digests[name],
                }
                for name in ARRAY_DTYPES
            },
            "meta": self.meta,
        }

    def to_json(self) -> bytes:
        return orjson.dumps({**self.body(), "signed": self.signed})

    def check_digests(self, arrays: Arrays) -> None:
        """``SnapshotError`` naming the first array whose bytes are not the published ones."""
        for name in ARRAY_DTYPES:
            if array_digest(arrays[name]) != self.digests[name]:
                raise SnapshotError(
                    f"snapshot {self.version}: array {name} does not match its digest"
                )

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        try:
            doc = orjson.loads(raw)
            if doc["format"] != FORMAT:
                raise SnapshotError(f"snapshot format {doc['format']}, expected {FORMAT}")
            arrays = doc["arrays"]
            for name, dtype in ARRAY_DTYPES.items():
                if arrays[name]["dtype"] != dtype:
                    raise SnapshotError(f"array {name}: dtype {arrays[name]['dtype']} != {dtype}")
            signed = doc.get("signed") or {}
            return cls(
                version=int(doc["version"]),
                lengths={name: _count(arrays[name]["length"]) for name in ARRAY_DTYPES},
                chunks={name: _count(arrays[name]["chunks"]) for name in ARRAY_DTYPES},
                created_at=str(doc["created_at"]),
                meta=dict(doc.get("meta", {})),
                digests={name: str(arrays[name]["sha256"]) for name in ARRAY_DTYPES},
                epoch=str(doc["epoch"]),
                signed=dict(signed) if isinstance(signed, dict) else {},
            )
        except (KeyError, TypeError, ValueError, AttributeError, orjson.JSONDecodeError) as exc:
            raise SnapshotError(f"malformed snapshot manifest: {exc!r}") from exc


def _count(value: Any) -> int:
    if not isinstance(value, int) or not 0 <= value < 1 << 40:
        raise ValueError(f"{value!r} is not a count")
    return value


def array_digest(array: npt.NDArray[Any]) -> str:
    """SHA-256 of the array's serialisation (hashlib releases the GIL on big buffers)."""
    return hashlib.sha256(array_bytes(array)).hexdigest()


def new_manifest(
    version: int, arrays: Arrays, meta: dict[str, Any], epoch: str, signer: Signer | None
) -> Manifest:
    """The manifest of ``arrays`` published as ``version`` of dataset ``epoch``,
    signed by ``signer`` (unsigned when None: only gateways told
    ``--allow-unsigned`` take it)."""
    manifest = Manifest(
        version=version,
        lengths={name: len(arrays[name]) for name in ARRAY_DTYPES},
        chunks={name: len(split_chunks(arrays[name])) for name in ARRAY_DTYPES},
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        meta=meta,
        digests={name: array_digest(arrays[name]) for name in ARRAY_DTYPES},
        epoch=epoch,
    )
    if signer is None:
        return manifest
    return dataclasses.replace(manifest, signed=signer.sign(manifest.body()))


# The one serialisation of an array, whatever holds it (Redis chunks, change
# stream and overlay fields, the disk cache, the workers' shared file): its
# raw little-endian bytes in the dtype of ARRAY_DTYPES, nothing else.


def array_bytes(array: npt.NDArray[Any]) -> memoryview:
    """The array's bytes, without a copy when it is contiguous already."""
    return np.ascontiguousarray(array).data.cast("B")


def array_from_bytes(
    name: str, raw: Any, length: int | None = None, offset: int = 0
) -> npt.NDArray[Any]:
    """Array ``name`` over ``raw`` (zero-copy) from ``offset``: exactly ``length``
    elements, or all of ``raw`` when ``length`` is None; ``SnapshotError`` otherwise."""
    dtype = np.dtype(ARRAY_DTYPES[name])
    size = memoryview(raw).nbytes - offset
    if length is None:
        if size % dtype.itemsize:
            raise SnapshotError(f"array {name} has {size} bytes, not whole {dtype}")
        length = size // dtype.itemsize
    # A value of its own (offset 0) holds exactly the array; a file holds more.
    elif size < length * dtype.itemsize or (offset == 0 and size != length * dtype.itemsize):
        raise SnapshotError(f"array {name}: {size} bytes, expected {length} x {dtype}")
    return np.frombuffer(raw, dtype=dtype, count=length, offset=offset)


def split_chunks(array: npt.NDArray[Any]) -> list[memoryview]:
    """The array's bytes in pieces of at most CHUNK_BYTES (at least one piece)."""
    raw = array_bytes(array)
    if len(raw) == 0:
        return [raw]
    return [raw[i : i + CHUNK_BYTES] for i in range(0, len(raw), CHUNK_BYTES)]


def join_chunks(name: str, parts: list[bytes | None], length: int) -> npt.NDArray[Any]:
    """Rebuild one array from its chunks; zero-copy when there is one chunk."""
    if any(part is None for part in parts):
        raise SnapshotError(f"array {name}: a chunk is missing")
    raw = parts[0] if len(parts) == 1 else b"".join(p for p in parts if p is not None)
    assert raw is not None
    return array_from_bytes(name, raw, length)


# The arrays in one file (the gateway's disk cache and the workers' shared
# file on /dev/shm): FILE_MAGIC, the header's length (8 bytes, little-endian),
# a JSON header (the caller's fields, and each array's dtype, offset and
# length), then each array's bytes from a 64-byte boundary (a cache line),
# so that a read-only memory map of the file serves the arrays in place.
FILE_MAGIC = b"ELIGARRAYS1\n"
_FILE_ALIGN = 64


def _aligned(n: int) -> int:
    return -(-n // _FILE_ALIGN) * _FILE_ALIGN


def write_arrays_file(
    path: Path, header: dict[str, Any], arrays: Arrays, *, durable: bool = True
) -> None:
    """Write ``arrays`` and ``header`` to ``path`` atomically: a temporary file in
    the same directory, then a rename. ``durable``: fsync the file and the
    directory first (a disk cache); tmpfs needs neither."""
    layout: dict[str, dict[str, Any]] = {}
    offset = 0
    for name in ARRAY_DTYPES:
        layout[name] = {"dtype": ARRAY_DTYPES[name], "offset": offset, "length": len(arrays[name])}
        offset += _aligned(int(arrays[name].nbytes))
    head = orjson.dumps({**header, "arrays": layout})
    start = _aligned(len(FILE_MAGIC) + 8 + len(head))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(FILE_MAGIC + len(head).to_bytes(8, "little") + head)
            for name in ARRAY_DTYPES:
                out.seek(start + layout[name]["offset"])
                out.write(array_bytes(arrays[name]))
            out.truncate(start + offset)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_arrays_file(path: Path, *, mapped: bool = False) -> tuple[dict[str, Any], Arrays]:
    """The header and validated arrays of a file ``write_arrays_file`` wrote:
    read into memory, or ``mapped`` read-only (pages shared with every process
    mapping the file). ``SnapshotError`` if it is damaged or truncated."""
    try:
        data: Any = np.memmap(path, dtype=np.uint8, mode="r") if mapped else path.read_bytes()
        if bytes(data[: len(FILE_MAGIC)]) != FILE_MAGIC:
            raise SnapshotError(f"{path}: not an arrays file")
        size = int.from_bytes(bytes(data[len(FILE_MAGIC) : len(FILE_MAGIC) + 8]), "little")
        header = orjson.loads(bytes(data[len(FILE_MAGIC) + 8 : len(FILE_MAGIC) + 8 + size]))
        start = _aligned(len(FILE_MAGIC) + 8 + size)
        arrays: Arrays = {}
        for name, dtype in ARRAY_DTYPES.items():
            spec = header["arrays"][name]
            if spec["dtype"] != dtype:
                raise SnapshotError(f"{path}: array {name} is {spec['dtype']}, expected {dtype}")
            arrays[name] = array_from_bytes(
                name, data, int(spec["length"]), offset=start + int(spec["offset"])
            )
        validate_arrays(arrays)
    except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
        raise SnapshotError(f"{path}: damaged arrays file: {exc}") from exc
    return header, arrays


def validate_arrays(arrays: Arrays) -> None:
    """Check the invariants the index relies on; raise SnapshotError naming the array."""
    for name, dtype in ARRAY_DTYPES.items():
        if name not in arrays:
            raise SnapshotError(f"array {name} is missing")
        if arrays[name].dtype != np.dtype(dtype) or arrays[name].ndim != 1:
            raise SnapshotError(f"array {name}: {arrays[name].dtype}, expected 1-d {dtype}")
    n = len(arrays["prac_codes"])
    r = len(arrays["reg_inst"])
    offsets = arrays["reg_offsets"]
    if len(offsets) != n + 1 or offsets[0] != 0 or offsets[-1] != r:
        raise SnapshotError("reg_offsets does not span the registrations")
    if np.any(offsets[1:] < offsets[:-1]):
        raise SnapshotError("reg_offsets is not non-decreasing")
    for name in ("reg_from", "reg_until"):
        if len(arrays[name]) != r:
            raise SnapshotError(f"{name} has {len(arrays[name])} rows, expected {r}")
    if r and int(arrays["reg_inst"].max()) >= len(arrays["inst_codes"]):
        raise SnapshotError("reg_inst points past inst_codes")
    for name in ("prac_codes", "inst_codes", "st_key", "pt_key"):
        a = arrays[name]
        if np.any(a[1:] <= a[:-1]):
            raise SnapshotError(f"{name} is not strictly increasing")
    for key, values in (("st_key", ("st_status", "st_until")), ("pt_key", ("pt_points",))):
        for name in values:
            if len(arrays[name]) != len(arrays[key]):
                raise SnapshotError(f"{name} and {key} differ in length")
        if len(arrays[key]) and int(arrays[key][-1]) >> DAY_BITS >= n:
            raise SnapshotError(f"{key} names a row past prac_codes")
    _validate_values(arrays)


# Sorted keys lie between these (contract.codes): a first letter A..Z.
_PRACTITIONER_KEYS = (27 * 10**PRACTITIONER_DIGITS, 27 * 27 * 10**PRACTITIONER_DIGITS)
_INSTITUTION_KEYS = (10**INSTITUTION_DIGITS, 27 * 10**INSTITUTION_DIGITS)
_STATUSES = np.array([int(s) for s in Status if s != Status.UNSPECIFIED], dtype=np.uint8)


def _validate_values(arrays: Arrays) -> None:
    """The value ranges the decisions rely on: a bug in our own loader, or bytes
    that a signature does not cover, must not become an index that decides wrong.
    Vectorised; tens of milliseconds at 15 million practitioners."""
    for name, (low, high) in (
        ("prac_codes", _PRACTITIONER_KEYS),
        ("inst_codes", _INSTITUTION_KEYS),
    ):
        a = arrays[name]
        if len(a) and not (low <= int(a[0]) and int(a[-1]) < high):
            raise SnapshotError(f"{name} holds a key that is not a valid code")
    reg_from, reg_until = arrays["reg_from"], arrays["reg_until"]
    if np.any(reg_from > MAX_DAY):
        raise SnapshotError("reg_from holds an open day")
    if np.any((reg_until != DAY_NONE) & (reg_until <= reg_from)):
        raise SnapshotError("reg_until is not after reg_from")
    day_mask = np.uint64((1 << DAY_BITS) - 1)
    for key in ("st_key", "pt_key"):
        if np.any((arrays[key] & day_mask) > MAX_DAY):
            raise SnapshotError(f"{key} holds a day out of range")
    status, until = arrays["st_status"], arrays["st_until"]
    if not np.isin(status, _STATUSES).all():
        raise SnapshotError("st_status holds a value that is not a status")
    if np.any((until != DAY_NONE) & (status != Status.SUSPENDED)):
        raise SnapshotError("st_until is set on a status other than SUSPENDED")
    start = (arrays["st_key"] & day_mask).astype(np.uint16)
    if np.any((until != DAY_NONE) & (until < start)):
        raise SnapshotError("st_until ends a suspension before it starts")


def empty_arrays() -> Arrays:
    """A valid snapshot with no practitioners."""
    arrays = {name: np.zeros(0, dtype=dtype) for name, dtype in ARRAY_DTYPES.items()}
    arrays["reg_offsets"] = np.zeros(1, dtype="<u4")
    return arrays
