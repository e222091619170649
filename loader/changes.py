"""Publishing live changes: the complete new records of a few practitioners,
on top of the current snapshot, without a full load (format: ``contract.changes``).

A change is built exactly like a snapshot (same validation, same points
engine, ``loader.pipeline.build_snapshot``) from small input files holding
ALL the records of the practitioners who changed: every registry row, and
every status-feed record or every scoring-ledger event (a REVOKE is
replayed with the event it revokes). Whoever is named in the files gets the
new record; no one else is touched.

Publication is one Lua script, atomic in Redis:

- it refuses unless ``base`` is still the current snapshot (a change is
  built on top of one snapshot; a new snapshot supersedes its changes), and
  unless the overlay's ``seq`` is still the one the merge was computed from
  (two operators publishing at once: the loser re-reads and retries);
- it appends the change to the stream (``kind=change, base, seq,
  published_at_ns`` and the arrays; ``MAXLEN ~`` bounds the stream, which is
  safe because the overlay hash holds everything), and
- stores the merged overlay with the new ``seq`` and the entry's id in the
  version's overlay hash, which is what a gateway reloading reads.

So a gateway sees a change in the stream and in the hash at once, or not at
all, and ``seq`` numbers the changes of one snapshot 1, 2, 3, ... without gaps.

When the primary has replicas, ``WAIT`` follows the script on its connection,
as after a snapshot's flip (``loader.publish``): the result says how many
replicas have the change, and the CLI fails one fewer replicas confirmed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import cast

import redis

from contract.changes import (
    CHANGE_SEQ_BASE,
    encode_arrays,
    index_version,
    merge_changes,
    signature_fields,
    signed_body,
)
from contract.errors import ChangeNotPublishedError, SnapshotError
from contract.reads import read_current_version, read_manifest, read_overlay
from contract.signing import Signer
from contract.snapshot import Arrays, Keys, validate_arrays
from loader.publish import (
    DEFAULT_WAIT_TIMEOUT_MS,
    NO_REPLICATION,
    Replication,
    eval_and_wait,
    replicas_to_wait_for,
)

# Entries kept in the change stream (approximately: MAXLEN ~). Gateways that
# fall further behind reload the overlay hash instead of replaying.
DEFAULT_STREAM_MAX_ENTRIES = 100_000
_ATTEMPTS = 5

# KEYS[1] current, KEYS[2] the base's overlay hash, KEYS[3] the stream,
# KEYS[4] the epoch. ARGV[1] base, ARGV[2] the overlay seq the merge was
# built on, ARGV[3] MAXLEN, ARGV[4] published_at_ns, ARGV[5] n = number of
# fields; then n name/value pairs of the change (arrays, epoch, signature),
# then n pairs of the merged overlay; last, ARGV[6 + 4n] the epoch the change
# was signed for. Returns {1, seq, id} published, {0, current} base not
# current, {-1, seq} the overlay moved on (retry), {-3, 0} the epoch changed.
_CHANGE_LUA = """
local base = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current ~= base then return {0, current} end
local seq = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')
if seq ~= tonumber(ARGV[2]) then return {-1, seq} end
local new = seq + 1
local n = tonumber(ARGV[5])
if redis.call('GET', KEYS[4]) ~= ARGV[6 + 4 * n] then return {-3, 0} end
local entry = {'kind', 'change', 'base', ARGV[1], 'seq', tostring(new), 'published_at_ns', ARGV[4]}
for i = 6, 5 + 2 * n do entry[#entry + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', unpack(entry))
local overlay = {'seq', tostring(new), 'id', id}
for i = 6 + 2 * n, 5 + 4 * n do overlay[#overlay + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], unpack(overlay))
return {1, new, id}
"""


@dataclass(frozen=True)
class ChangeResult:
    """A published change: its snapshot, sequence number, ``index_version`` and stream entry."""

    base: int
    seq: int
    practitioners: int
    stream_id: str
    replication: Replication = NO_REPLICATION

    @property
    def index_version(self) -> int:
        return index_version(self.base, self.seq)


def publish_change(
    client: redis.Redis,
    keys: Keys,
    change: Arrays,
    *,
    expect_snapshot: int | None = None,
    stream_max_entries: int = DEFAULT_STREAM_MAX_ENTRIES,
    signer: Signer | None = None,
    wait_replicas: int | None = None,
    wait_timeout_ms: int = DEFAULT_WAIT_TIMEOUT_MS,
) -> ChangeResult:
    """Publish ``change`` (snapshot-format arrays of the changed practitioners).

    Applies on top of the current snapshot, or only if it is
    ``expect_snapshot``. Then waits up to ``wait_timeout_ms`` for
    ``wait_replicas`` replicas to have it (None: 1 when the primary has
    replicas online, else 0; the result's ``replication`` says).

    Raises ``SnapshotError`` for arrays that break the format (nothing
    written), ``ChangeNotPublishedError`` if no snapshot is published, another
    than ``expect_snapshot`` is current, or concurrent publishers won every
    attempt; Redis errors as they come. In every failure case nothing was
    published.
    """
    validate_arrays(change)
    count = len(change["prac_codes"])
    if count == 0:
        raise SnapshotError("a change names no practitioner")
    fields = encode_arrays(change)
    wanted, online = replicas_to_wait_for(client, wait_replicas)
    for _ in range(_ATTEMPTS):
        current = read_current_version(client, keys) or 0
        if current == 0:
            raise ChangeNotPublishedError("no snapshot is published: load one first")
        if expect_snapshot is not None and current != expect_snapshot:
            raise ChangeNotPublishedError(_not_current(expect_snapshot, current))
        manifest = read_manifest(client, keys, current)
        if manifest is None:
            continue  # replaced since we read current: look again
        epoch = manifest.epoch
        overlay = read_overlay(client, keys, current, epoch)
        seq = overlay.seq
        if seq + 1 >= CHANGE_SEQ_BASE:
            raise ChangeNotPublishedError(
                f"snapshot {current} has {seq} changes, the most one snapshot takes: "
                "publish a full snapshot"
            )
        merged_arrays = merge_changes(overlay.arrays, change)
        published_at_ns = time.time_ns()
        entry = {
            **fields,
            "epoch": epoch.encode(),
            **signature_fields(
                signer, signed_body("change", current, seq + 1, epoch, change, published_at_ns)
            ),
        }
        merged = {
            **encode_arrays(merged_arrays),
            "epoch": epoch.encode(),
            **signature_fields(
                signer, signed_body("overlay", current, seq + 1, epoch, merged_arrays)
            ),
        }
        args: list[bytes | str | int] = [
            current,
            seq,
            stream_max_entries,
            published_at_ns,
            len(entry),
        ]
        for name, value in entry.items():
            args += [name, value]
        for name, value in merged.items():
            args += [name, value]
        args.append(epoch)
        raw, acked = eval_and_wait(
            client,
            wanted,
            wait_timeout_ms,
            _CHANGE_LUA,
            4,
            keys.current,
            keys.overlay(current),
            keys.changes,
            keys.epoch,
            *args,
        )
        reply = cast(list[int | bytes], raw)
        outcome = int(reply[0])
        if outcome == 1:
            stream_id = reply[2]
            sid = stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)
            replication = Replication(wanted, acked, wait_timeout_ms if wanted else 0, online)
            return ChangeResult(current, int(reply[1]), count, sid, replication)
        if outcome == 0 and expect_snapshot is not None:
            raise ChangeNotPublishedError(_not_current(expect_snapshot, int(reply[1])))
        if outcome == -3:
            raise ChangeNotPublishedError(
                "the dataset's epoch changed (Redis lost or replaced its data): load a full "
                "snapshot first"
            )
        # A new snapshot became current, or another change went in first: rebuild on it.
    raise ChangeNotPublishedError(
        f"other publishers moved snapshot {current}'s changes on {_ATTEMPTS} times in a row"
    )


def _not_current(expected: int, current: int) -> str:
    return (
        f"the change was built for snapshot {expected} but {current} is current: "
        "rebuild it on the current snapshot, or check that snapshot already includes it"
    )
