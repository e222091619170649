"""The last loaded index on local disk, so that a gateway starting while Redis
is down can still decide (fail-static from a cold start).

Two files in ``--snapshot-cache-dir``, each written atomically (a temporary
file in the same directory, fsync, then ``os.replace``): a reader sees the
old file or the new one, never a torn one, even if the gateway dies mid-write.

- ``snapshot.bin``: the snapshot's arrays, written once per snapshot version
  (hundreds of megabytes at 15 million practitioners, so off the event loop);
- ``overlay.bin``: the changes applied on top of it, rewritten after changes
  (small). It counts only if it names the same snapshot version.

File layout: the contract's arrays file (``contract.snapshot.write_arrays_file``,
the same as the workers' shared file), its header holding the prefix,
versions, stream position and when it was saved.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from contract.errors import SnapshotError
from contract.snapshot import read_arrays_file, write_arrays_file
from gateway.index import LayeredIndex, StatusIndex

SNAPSHOT_FILE = "snapshot.bin"
OVERLAY_FILE = "overlay.bin"


@dataclass(frozen=True)
class CachedIndex:
    """An index read back from the disk cache, and when it was saved (ISO 8601, UTC)."""

    index: LayeredIndex
    saved_at: str


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
        header = {
            "prefix": self.prefix,
            "snapshot_version": base.version,
            "meta": base.meta,
            "saved_at": _now(),
        }
        write_arrays_file(self.directory / SNAPSHOT_FILE, header, base.arrays)
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
        base = StatusIndex(arrays, version, dict(header.get("meta", {})), validated=True)
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


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
