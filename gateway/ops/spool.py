"""The local, append-only spool of emergency-override audit entries (issue 11,
item 5): an override is on this gateway's disk, fsynced, before the answer
that pays it leaves; a background task (``gateway.ops.audit``) then copies the
spool to Redis.

Layout of a spool directory (``--audit-spool-dir``)::

    lane-0/lock              flock(2)ed by the process writing this lane
    lane-0/chain_id          this lane's hash-chain id, made once, never changed
    lane-0/0000000000000001.jsonl   segments, named by their first seq
    lane-0/drained.json      how far the lane is in Redis (seq, segment, offset)
    lane-1/...               a second process on the same directory (workers)

A process takes the first lane nobody holds, so a restarted gateway (or
worker) takes over the lane its predecessor left, drains what is undrained
and continues its hash chain. Each entry is one line of canonical JSON
(sorted keys, string values) carrying ``chain``, ``seq`` (1, 2, ... per
lane), ``prev_hash`` and ``hash = sha256(prev_hash + canonical(entry without
hash))``: the chain makes an edited, dropped or reordered entry visible
(``python -m gateway.ops overrides --verify``).

Group commit (as databases do for their write-ahead log): ``GroupCommitter``
is one thread; every entry submitted while a write + fdatasync is under way
goes into the next one, so concurrent calls share one fsync. A failed write
is cut off again (ftruncate to the size before it) so the file never holds an
entry nobody was told about; until the cut succeeds, nothing else is written.

Retention: a segment is deleted only once every entry in it is in Redis AND
its last write is older than ``retention_s`` (default 30 days), so an erased
or trimmed stream can be refilled from the spools within that time.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import fcntl
import hashlib
import itertools
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import orjson

log = logging.getLogger(__name__)

Entry = dict[str, str]
GENESIS = "0" * 64  # prev_hash of a chain's first entry
CHAIN_FIELDS = ("chain", "seq", "prev_hash", "hash")
SEGMENT_BYTES = 64 * 1024 * 1024
RETENTION_S = 30 * 86400.0


def canonical(entry: Mapping[str, str]) -> bytes:
    """The bytes an entry's hash covers: sorted-key JSON of every field but ``hash``."""
    return orjson.dumps(
        {k: v for k, v in entry.items() if k != "hash"}, option=orjson.OPT_SORT_KEYS
    )


def chain_hash(prev_hash: str, entry: Mapping[str, str]) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(entry)).hexdigest()


def _parse_line(raw: bytes) -> Entry | None:
    try:
        entry = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(entry, dict) or not str(entry.get("seq", "")).isdigit():
        return None
    return {str(k): str(v) for k, v in entry.items()}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """One lane of a spool directory, held by this process until ``close``.

    ``append`` is called by one thread only (the ``GroupCommitter``); the
    drain (``read_undrained`` / ``mark_drained``) by one task only.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        segment_bytes: int = SEGMENT_BYTES,
        retention_s: float = RETENTION_S,
    ) -> None:
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.retention_s = retention_s
        self.directory.mkdir(parents=True, exist_ok=True)
        self.lane, self._lock_fd = self._take_lane()
        self.chain_id = self._chain_id()
        self._segments: list[int] = sorted(
            int(p.stem) for p in self.lane.glob("*.jsonl") if p.stem.isdigit()
        )
        self._seq, self._hash, self._size = self._recover()
        self.committed_seq = self._seq  # on disk, fsynced
        self._fd: int | None = None
        self._truncate_to: int | None = None
        self.drained_seq, self._cursor = self._load_drained()

    # -- opening ------------------------------------------------------------

    def _take_lane(self) -> tuple[Path, int]:
        for n in itertools.count():
            lane = self.directory / f"lane-{n}"
            lane.mkdir(exist_ok=True)
            fd = os.open(lane / "lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return lane, fd
        raise AssertionError("unreachable")

    def _chain_id(self) -> str:
        path = self.lane / "chain_id"
        with contextlib.suppress(FileNotFoundError):
            existing = path.read_text().strip()
            if existing:
                return existing
        host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:40] or "gateway"
        chain_id = f"{host}-{secrets.token_hex(6)}"
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as f:
            f.write(chain_id + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.lane)
        return chain_id

    def _segment_path(self, first_seq: int) -> Path:
        return self.lane / f"{first_seq:016d}.jsonl"

    def _recover(self) -> tuple[int, str, int]:
        """The last good entry's seq and hash, and the size of the last segment
        once a torn tail (a write cut short by kill -9) is cut off."""
        for first in reversed(self._segments):
            path = self._segment_path(first)
            data = path.read_bytes()
            good = 0
            last: Entry | None = None
            for raw in data.splitlines(keepends=True):
                entry = _parse_line(raw) if raw.endswith(b"\n") else None
                if entry is None:
                    break
                last = entry
                good += len(raw)
            if good < len(data):
                log.warning(
                    "override spool: torn tail cut off",
                    extra={"segment": str(path), "bytes": len(data) - good},
                )
                with path.open("r+b") as f:
                    f.truncate(good)
                    os.fsync(f.fileno())
            if last is not None:
                size = good if first == self._segments[-1] else 0
                return int(last["seq"]), last["hash"], size
        return 0, GENESIS, 0

    def _load_drained(self) -> tuple[int, tuple[int, int]]:
        first = self._segments[0] if self._segments else 1
        try:
            state = orjson.loads((self.lane / "drained.json").read_bytes())
            seq, segment, offset = int(state["seq"]), int(state["segment"]), int(state["offset"])
        except (FileNotFoundError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return 0, (first, 0)
        if segment not in self._segments:  # pruned or never written: start over, skip by seq
            return seq, (first, 0)
        return seq, (segment, offset)

    # -- writing (the committer thread) --------------------------------------

    def append(self, entries: list[Entry]) -> None:
        """Chain, write and fdatasync ``entries`` (filled in place with the
        chain fields); on OSError nothing of them stays in the file."""
        if self._truncate_to is not None:
            assert self._fd is not None
            os.ftruncate(self._fd, self._truncate_to)
            self._size, self._truncate_to = self._truncate_to, None
        if self._fd is None or self._size >= self.segment_bytes:
            self._open_segment()
        assert self._fd is not None
        seq, prev = self._seq, self._hash
        lines = []
        for entry in entries:
            seq += 1
            entry.update(chain=self.chain_id, seq=str(seq), prev_hash=prev)
            prev = entry["hash"] = chain_hash(prev, entry)
            lines.append(orjson.dumps(entry, option=orjson.OPT_SORT_KEYS) + b"\n")
        data = memoryview(b"".join(lines))
        start = self._size
        try:
            written = 0
            while written < len(data):
                written += self._write(data[written:])
            os.fdatasync(self._fd)
        except OSError:
            for entry in entries:
                for name in CHAIN_FIELDS:
                    entry.pop(name, None)
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                self._truncate_to = start  # cut before the next write, or write nothing
            raise
        self._size = start + len(data)
        self._seq, self._hash = seq, prev
        self.committed_seq = seq

    def _write(self, data: memoryview) -> int:
        assert self._fd is not None
        return os.write(self._fd, data)

    def _open_segment(self) -> None:
        """Continue the last segment after a restart, or start a new one when
        there is none or the current one is full."""
        if self._fd is None and self._segments and self._size < self.segment_bytes:
            self._fd = os.open(self._segment_path(self._segments[-1]), os.O_WRONLY | os.O_APPEND)
            return
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        first_seq = self._seq + 1
        fd = os.open(self._segment_path(first_seq), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            _fsync_dir(self.lane)  # the new name survives a crash too
        except OSError:
            os.close(fd)
            raise
        self._fd, self._size = fd, 0
        self._segments.append(first_seq)

    # -- draining (the audit task) --------------------------------------------

    @property
    def pending(self) -> int:
        """Entries on disk not yet confirmed in Redis."""
        return max(self.committed_seq - self.drained_seq, 0)

    def read_undrained(
        self, limit: int, max_bytes: int = 4 * 1024 * 1024
    ) -> tuple[list[Entry], tuple[int, int]]:
        """Up to ``limit`` committed entries after the drained ones, and the
        cursor (segment, offset) just after the last of them."""
        committed = self.committed_seq
        entries: list[Entry] = []
        segment, offset = self._cursor
        while len(entries) < limit and self._segments:
            path = self._segment_path(segment)
            try:
                with path.open("rb") as f:
                    f.seek(offset)
                    data = f.read(max_bytes)
            except FileNotFoundError:
                data = b""
            consumed = 0
            stop = False
            for raw in data.splitlines(keepends=True):
                if not raw.endswith(b"\n"):
                    break  # being written (not committed yet)
                entry = _parse_line(raw)
                if entry is not None and int(entry["seq"]) > committed:
                    stop = True
                    break
                consumed += len(raw)
                if entry is not None and int(entry["seq"]) > self.drained_seq:
                    entries.append(entry)
                    if len(entries) >= limit:
                        break
            offset += consumed
            if stop or len(entries) >= limit:
                break
            if consumed > 0 and len(data) == max_bytes:
                continue  # more of this segment
            later = [s for s in self._segments if s > segment]
            if not later or consumed < len(data):
                break
            # Rotation starts a segment only after the last one's final entry
            # was committed: at its end, the drain goes on in the next.
            segment, offset = later[0], 0
        return entries, (segment, offset)

    def mark_drained(self, seq: int, cursor: tuple[int, int]) -> None:
        """Remember that everything up to ``seq`` is in Redis (no fsync: after a
        crash the drain repeats a little, and Redis drops what it already has)."""
        self.drained_seq = max(self.drained_seq, seq)
        self._cursor = cursor
        path = self.lane / "drained.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(
            orjson.dumps({"seq": self.drained_seq, "segment": cursor[0], "offset": cursor[1]})
        )
        os.replace(tmp, path)

    def prune(self, now: float | None = None) -> int:
        """Delete drained segments older than the retention; return how many."""
        now = time.time() if now is None else now
        removed = 0
        for first, following in itertools.pairwise(list(self._segments)):
            if following - 1 > self.drained_seq or following > self._cursor[0]:
                break
            path = self._segment_path(first)
            try:
                if now - path.stat().st_mtime < self.retention_s:
                    break
                path.unlink()
            except FileNotFoundError:
                pass
            self._segments.remove(first)
            removed += 1
        return removed

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock: the lane is free again
            self._lock_fd = -1


def read_spool_dir(directory: str | Path) -> Iterator[Entry]:
    """Every intact entry of every lane of a spool directory, lane by lane in
    seq order (for ``ops overrides --refill-from``); takes no lock."""
    for lane in sorted(Path(directory).glob("lane-*")):
        segments = sorted(p for p in lane.glob("*.jsonl") if p.stem.isdigit())
        for path in segments:
            with path.open("rb") as f:
                for raw in f:
                    if raw.endswith(b"\n"):
                        entry = _parse_line(raw)
                        if entry is not None:
                            yield entry


class GroupCommitter:
    """One thread that writes what was submitted since its last write, with
    one fdatasync for all of it (group commit)."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.commits = 0  # fsyncs done
        self.entries = 0  # entries they carried
        self._cond = threading.Condition()
        self._queue: list[tuple[list[Entry], concurrent.futures.Future[bool]]] = []
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="override-spool", daemon=True)
        self._thread.start()

    def submit(self, entries: list[Entry]) -> concurrent.futures.Future[bool]:
        """A future that is True once ``entries`` are on disk, or raises the OSError."""
        future: concurrent.futures.Future[bool] = concurrent.futures.Future()
        with self._cond:
            if self._closed:
                future.set_exception(OSError(errno.EBADF, "override spool closed"))
                return future
            self._queue.append((entries, future))
            self._cond.notify()
        return future

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                batch, self._queue = self._queue, []
            entries = [entry for group, _ in batch for entry in group]
            error: OSError | None = None
            try:
                self.spool.append(entries)
            except OSError as exc:
                error = exc
            else:
                self.commits += 1
                self.entries += len(entries)
            for _, future in batch:
                with contextlib.suppress(concurrent.futures.InvalidStateError):
                    if error is None:
                        future.set_result(True)
                    else:
                        future.set_exception(error)

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout_s)
