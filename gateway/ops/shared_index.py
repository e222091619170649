"""One copy of each snapshot's arrays for all worker processes of a gateway.

With ``--workers N`` every worker follows Redis on its own (a worker is a
whole gateway: feed, overlay, audit), but the snapshot arrays, hundreds of
megabytes at 15 million practitioners, are kept once: the first worker to
load a version writes its arrays to a file in a directory on ``/dev/shm``
(tmpfs: memory, not disk) and every worker, that one included, replaces its
own copy with a read-only ``np.memmap`` of the file. The pages are the page
cache's, shared by every process that maps them, so the index's memory does
not grow with N. A worker that loads a version already there just maps it.

Writes are atomic (a temporary file, then ``os.link`` to the final name): a
worker maps a whole file or none. Two workers loading the same version at
once both write it; the first link wins, the second finds the name taken,
drops its file and maps the first: one inode per version, so one copy. Files of
versions older than the previous one are removed by whoever shares a newer
version (a worker still deciding from a removed version keeps its mapping:
an unlinked tmpfs file lives until its last mapping goes). The directory
belongs to the parent process, which removes it when the workers are done.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from contract.errors import SnapshotError
from contract.snapshot import Arrays, read_arrays_file, write_arrays_file

_FILE = re.compile(r"^snapshot-(\d+)\.bin$")


class SharedSnapshots:
    """Snapshot arrays shared through files in ``directory`` (on tmpfs), and
    the compiled claim path's packed table of each (``packed-V.bin``, same
    write-once rules): built by one worker, mapped by all."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def path(self, version: int) -> Path:
        return self.directory / f"snapshot-{version}.bin"

    def share(self, arrays: Arrays, version: int) -> Arrays:
        """``arrays`` backed by the shared file of ``version`` (written if missing)."""
        path = self.path(version)
        mapped = self._map(path, version)
        if mapped is None:
            self._write(path, arrays, version)
            self._remove_older_than_previous(version)
            mapped = self._map(path, version)
            if mapped is None:
                raise SnapshotError(f"{path}: the shared file just written is unreadable")
        return mapped

    def packed_path(self, version: int) -> Path:
        return self.directory / f"packed-{version}.bin"

    def share_table(self, version: int, build: Callable[[], npt.NDArray[np.uint64]]) -> Any:
        """The packed table of ``version``, memory-mapped read-only from its shared
        file (``build()`` and written if missing). The caller checks it against
        its arrays (``gateway.kernel.PackedIndex(arrays, table)``)."""
        path = self.packed_path(version)
        if not path.exists():
            table = build()
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".packed-", dir=self.directory)
            staged = Path(tmp)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(np.ascontiguousarray(table).data)
                with contextlib.suppress(FileExistsError):  # another worker's is the same
                    os.link(staged, path)
            finally:
                staged.unlink(missing_ok=True)
        return np.memmap(path, dtype=np.uint64, mode="r")

    @staticmethod
    def _map(path: Path, version: int) -> Arrays | None:
        """The file's arrays, memory-mapped; None if it is missing, damaged or not ``version``."""
        try:
            header, arrays = read_arrays_file(path, mapped=True)
        except (FileNotFoundError, SnapshotError):
            return None
        return arrays if header.get("snapshot_version") == version else None

    def _write(self, path: Path, arrays: Arrays, version: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".snapshot-", dir=self.directory)
        os.close(fd)
        staged = Path(tmp)
        try:
            # tmpfs: memory, nothing to make durable.
            write_arrays_file(staged, {"snapshot_version": version}, arrays, durable=False)
            try:
                # Workers that load one version at once race here: link, not
                # rename, so the first file stays the one every worker maps
                # (a rename would swap it under a worker that mapped it).
                os.link(staged, path)
            except FileExistsError:
                if self._map(path, version) is None:  # a damaged leftover: replace it
                    os.replace(staged, path)
        finally:
            staged.unlink(missing_ok=True)

    def _remove_older_than_previous(self, version: int) -> None:
        versions = sorted(
            int(m.group(1))
            for p in self.directory.iterdir()
            if (m := _FILE.match(p.name)) is not None
        )
        older = [v for v in versions if v < version]
        for stale in older[:-1]:  # keep the one just before: a worker may still read it
            self.path(stale).unlink(missing_ok=True)
            self.packed_path(stale).unlink(missing_ok=True)
