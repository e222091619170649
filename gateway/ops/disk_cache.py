"""The last loaded index on local disk, so that a gateway starting while Redis
is down can still decide (fail-static from a cold start).

Two files in ``--snapshot-cache-dir``, each written atomically (a temporary
file in the same directory, fsync, then ``os.replace``): a reader sees the
old file or the new one, never a torn one, even if the gateway dies mid-write.

- ``snapshot.bin``: the snapshot's arrays, written once per snapshot version
  (hundreds of megabytes at 15 million practitioners, so off the event loop);
- ``overlay.bin``: the changes applied on top of it, rewritten after changes
  (small). It counts only if it names the same snapshot version.

File layout: ``MAGIC``, the header's length (8 bytes, little-endian), a JSON
header (prefix, versions, stream position, when saved, and each array's
dtype, offset and length), then the arrays' raw bytes, each 8-byte aligned.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from contract.errors import SnapshotError
from contract.snapshot import ARRAY_DTYPES, Arrays, validate_arrays
from gateway.index import LayeredIndex, StatusIndex

MAGIC = b"ELIGCACHE1\n"
SNAPSHOT_FILE = "snapshot.bin"
OVERLAY_FILE = "overlay.bin"


@dataclass(frozen=True)
class CachedIndex:
    """An index read back from the disk cache, and when it was saved (ISO 8601, UTC)."""

    index: LayeredIndex
    saved_at: str


def write_arrays_file(path: Path, header: dict[str, Any], arrays: Arrays) -> None:
    """Write ``arrays`` and ``header`` to ``path`` atomically (temp file + fsync + rename)."""
    layout: dict[str, dict[str, Any]] = {}
    offset = 0
    for name in ARRAY_DTYPES:
        layout[name] = {"dtype": ARRAY_DTYPES[name], "offset": offset, "length": len(arrays[name])}
        offset += _aligned(int(arrays[name].nbytes))
    head = orjson.dumps({**header, "arrays": layout})
    start = _aligned(len(MAGIC) + 8 + len(head))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(MAGIC + len(head).to_bytes(8, "little") + head)
            out.write(b"\0" * (start - len(MAGIC) - 8 - len(head)))
            for name in ARRAY_DTYPES:
                raw = np.ascontiguousarray(arrays[name]).data.cast("B")
                out.write(raw)
                out.write(b"\0" * (_aligned(len(raw)) - len(raw)))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def read_arrays_file(path: Path) -> tuple[dict[str, Any], Arrays]:
    """The header and arrays of a file ``write_arrays_file`` wrote; ``SnapshotError`` if damaged."""
    data = path.read_bytes()
    try:
        if not data.startswith(MAGIC):
            raise SnapshotError(f"{path}: not a snapshot cache file")
        size = int.from_bytes(data[len(MAGIC) : len(MAGIC) + 8], "little")
        header = orjson.loads(data[len(MAGIC) + 8 : len(MAGIC) + 8 + size])
        start = _aligned(len(MAGIC) + 8 + size)
        arrays: Arrays = {}
        for name, dtype in ARRAY_DTYPES.items():
            spec = header["arrays"][name]
            if spec["dtype"] != dtype:
                raise SnapshotError(f"{path}: array {name} is {spec['dtype']}, expected {dtype}")
            arrays[name] = np.frombuffer(
                data, dtype=dtype, count=int(spec["length"]), offset=start + int(spec["offset"])
            )
        validate_arrays(arrays)
    except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
        raise SnapshotError(f"{path}: damaged snapshot cache file: {exc}") from exc
    return header, arrays


class SnapshotCache:
    """The disk cache of one gateway (one Redis key prefix)."""

    def __init__(self, directory: Path | str, prefix: str) -> None:
        self.directory = Path(directory)
        self.prefix = prefix
        self.saved_version = 0  # snapshot version of snapshot.bin, once written or read

    def save_snapshot(self, base: StatusIndex) -> bool:
        """Write the snapshot's arrays unless this version is on disk already."""
        if base.version == self.saved_version:
            return False
        self.directory.mkdir(parents=True, exist_ok=True)
        arrays = {name: getattr(base, _ATTRIBUTES[name]) for name in ARRAY_DTYPES}
        header = {
            "prefix": self.prefix,
            "snapshot_version": base.version,
            "meta": base.meta,
            "saved_at": _now(),
        }
        write_arrays_file(self.directory / SNAPSHOT_FILE, header, arrays)
        self.saved_version = base.version
        return True

    def save_overlay(self, index: LayeredIndex) -> None:
        """Write the changes applied on top of the snapshot (after ``save_snapshot``)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        header = {
            "prefix": self.prefix,
            "snapshot_version": index.snapshot_version,
            "change_seq": index.change_seq,
            "stream_id": index.stream_id,
            "saved_at": _now(),
        }
        write_arrays_file(self.directory / OVERLAY_FILE, header, index.overlay_arrays)

    def load(self) -> CachedIndex | None:
        """The cached index, or None if there is none for this prefix.

        Raises ``SnapshotError`` if the snapshot file is damaged; a damaged or
        mismatched overlay file is ignored (the snapshot alone is consistent:
        the changes come back from Redis when it returns).
        """
        path = self.directory / SNAPSHOT_FILE
        if not path.exists():
            return None
        header, arrays = read_arrays_file(path)
        if header.get("prefix") != self.prefix:
            return None
        version = int(header["snapshot_version"])
        base = StatusIndex(arrays, version, dict(header.get("meta", {})))
        self.saved_version = version
        saved_at = str(header.get("saved_at", ""))
        index = LayeredIndex(base)
        overlay_path = self.directory / OVERLAY_FILE
        if overlay_path.exists():
            try:
                over_header, over_arrays = read_arrays_file(overlay_path)
            except SnapshotError:
                return CachedIndex(index, saved_at)
            if over_header.get("prefix") == self.prefix and (
                int(over_header.get("snapshot_version", -1)) == version
            ):
                index = LayeredIndex(
                    base,
                    over_arrays,
                    int(over_header["change_seq"]),
                    str(over_header["stream_id"]),
                )
                saved_at = str(over_header.get("saved_at", saved_at))
        return CachedIndex(index, saved_at)


# StatusIndex attribute holding each snapshot array.
_ATTRIBUTES = {
    "prac_codes": "codes",
    "reg_offsets": "reg_offsets",
    "reg_inst": "reg_inst",
    "reg_from": "reg_from",
    "reg_until": "reg_until",
    "inst_codes": "inst_codes",
    "st_key": "st_key",
    "st_status": "st_status",
    "st_until": "st_until",
    "pt_key": "pt_key",
    "pt_points": "pt_points",
}


def _aligned(n: int) -> int:
    return (n + 7) & ~7


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
