"""The emergency-override audit (SPEC §4 rule 5: overrides are recorded for
review, because emergency flags are themselves abused).

Durable path (every gateway started by ``gateway.server``): for a claim with
overridden lines, ``record`` builds one entry per line and hands them to the
spool's group committer (``gateway.ops.spool``); it returns an
``OverrideTicket`` that the servicer's async handler awaits before the answer
leaves, so a paid override is on this gateway's disk (fdatasync) first. The
decision itself does no disk I/O. A background task (``run``) then copies the
spool to the Redis stream ``Keys.overrides`` (``{prefix}:audit:overrides``)
with a Lua script that skips what Redis already has: per hash chain, the
highest seq written is kept in the hash ``{stream}:chains``, so a batch
written again after a broken connection, or by a restarted gateway, lands
once. A restarted gateway takes over the spool lane it left and drains it.

The drain writes to the primary (the gateway's writer client is a Sentinel
primary client when it runs with ``--redis-sentinel``: ``contract.redis_target``)
and, when the primary has replicas online, marks a batch drained only once a
replica has it too (``WAIT`` on the script's connection): Redis replicates
asynchronously, and a failover that promoted a replica lacking the batch
would otherwise lose records the spool no longer holds. Until then the batch
stays in the spool and is sent again; the script skips what the primary
already has, so a record lands once whichever node is primary.

If the spool cannot be written (disk full, read-only, I/O error) the
``failure_policy`` decides: ``reject`` (the default) answers those lines
``REJECT`` with the reason they would have overridden (SUSPENDED /
TERMINATED) — nothing is paid unaudited; ``pay`` pays them and keeps their
records in the bounded in-memory queue below, best effort. Either way the
spool state is in ``health_details``, the metrics and the log.

Memory-only path (``spool=None``: unit tests, benchmarks): records wait in an
in-memory queue bounded at ``max_pending`` (the oldest are dropped, counted
in ``dropped``) and are written in pipelined XADD batches; at least once.

Keys: ``record_id`` is derived from (institution, claim_id, line_id) only, so
the attempts of a retried claim share it and are reviewed once
(``read_overrides``); ``attempt_id`` (this process's id and a sequence number)
names one decision. A call whose answer was not delivered (cancelled, deadline
expired) gets a follow-up entry ``kind=undelivered`` naming its attempt.

Each override entry: ``kind`` (override), ``record_id``, ``attempt_id``,
``claim_id``, ``line_id``, ``practitioner_code``, ``institution_code``,
``channel``, ``service_date`` (YYYYMMDD), ``overridden_reason`` (SUSPENDED or
TERMINATED), ``item_code``, ``amount_fen``, ``index_version``, ``request_id``,
``decided_at`` (Unix seconds), and from the spool ``chain``, ``seq``,
``prev_hash``, ``hash`` (tamper evidence: ``verify_chains``). The stream entry
id is Redis's own time of the write, which is what ``read_overrides`` selects
on.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import datetime as dt
import hashlib
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from contract.days import day_to_yyyymmdd
from contract.domain import Channel, Reason
from contract.redis_target import online_replicas
from gateway.decide import Override
from gateway.ops.identity import CLIENT_IDENTITY
from gateway.ops.logs import REQUEST_ID
from gateway.ops.spool import GENESIS, Entry, GroupCommitter, Spool, chain_hash, read_spool_dir
from proto.eligibility.v1 import eligibility_pb2 as pb

log = logging.getLogger(__name__)

Record = dict[str, str]

RECORD_FIELDS = (
    "record_id",
    "claim_id",
    "line_id",
    "practitioner_code",
    "institution_code",
    "channel",
    "service_date",
    "overridden_reason",
    "item_code",
    "amount_fen",
    "index_version",
    "request_id",
    "client_identity",
    "decided_at",
)
# Every field of an override entry written through the spool.
FIELDS = (*RECORD_FIELDS, "kind", "attempt_id", "chain", "seq", "prev_hash", "hash")
MAX_TEXT = 128  # free-text fields a client chooses are cut to this many characters
POLICIES = ("reject", "pay")
COMMIT_TIMEOUT_S = 5.0  # a spool slower than this counts as failed for that call
# How long a drained batch waits for a replica to have it (WAIT) before it is
# sent again on the next pass.
REPLICA_WAIT_MS = 2000


class NotReplicatedError(RedisError):
    """A drained batch is on the primary but no replica confirmed it in time:
    it stays in the spool and is sent again (the script skips what is there)."""


# Per entry in ARGV after the chain id and maxlen: seq, field count, fields...
# Only entries above the chain's high-water mark are added: at least once
# from the gateway becomes exactly once in the stream.
_DRAIN_LUA = """
local high = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local last = high
local written = 0
local i = 3
while i <= #ARGV do
  local seq = tonumber(ARGV[i])
  local n = tonumber(ARGV[i + 1])
  if seq > last then
    local args = {KEYS[1], 'MAXLEN', '~', ARGV[2], '*'}
    for j = i + 2, i + 1 + 2 * n do args[#args + 1] = ARGV[j] end
    redis.call('XADD', unpack(args))
    last = seq
    written = written + 1
  end
  i = i + 2 + 2 * n
end
if last > high then redis.call('HSET', KEYS[2], ARGV[1], last) end
return written
"""


def record_key(institution_code: str, claim_id: str, line_id: str) -> str:
    """The id every attempt at one claim line shares (a retried claim is reviewed once)."""
    raw = "\x1f".join((institution_code, claim_id, line_id)).encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def chains_key(stream_key: str) -> str:
    """The hash of each chain's highest seq written to ``stream_key``."""
    return f"{stream_key}:chains"


def spool_dir_for(audit_spool_dir: str | None, snapshot_cache_dir: str | None) -> tuple[Path, bool]:
    """Where a gateway spools, and whether that is a temporary directory.

    The flag if given; else ``audit-spool`` under the snapshot cache directory
    (a gateway with a disk cache already has a directory that outlives it);
    else a fresh temporary directory, removed at a clean stop once drained:
    it survives a Redis outage but not a restart (``--refill-from`` it by hand).
    """
    if audit_spool_dir:
        return Path(audit_spool_dir), False
    if snapshot_cache_dir:
        return Path(snapshot_cache_dir) / "audit-spool", False
    return Path(tempfile.mkdtemp(prefix="elig-audit-spool-")), True


class OverrideTicket:
    """One claim's override entries on their way to the spool."""

    def __init__(
        self,
        audit: OverrideAudit,
        line_indexes: Sequence[int],
        entries: list[Entry],
        future: concurrent.futures.Future[bool],
    ) -> None:
        self.audit = audit
        self.line_indexes = line_indexes
        self.entries = entries
        self.future = future
        self._marked = False

    async def wait(self) -> bool:
        """True when the lines may be paid: their entries are on disk (or the
        policy pays without); False when they must be rejected instead."""
        try:
            async with asyncio.timeout(self.audit.commit_timeout_s):
                await asyncio.shield(asyncio.wrap_future(self.future))
            return True
        except asyncio.CancelledError:
            self.undelivered("cancelled")
            raise
        except TimeoutError:
            if self.audit.failure_policy == "pay":
                return True  # written later, or kept in memory
            self.audit.refused += len(self.entries)
            self.undelivered("audit_timeout")  # if it reaches the disk after all
            return False
        except OSError:
            if self.audit.failure_policy == "pay":
                return True
            self.audit.refused += len(self.entries)
            return False

    def undelivered(self, why: str) -> None:
        """The answer carrying these overrides did not reach the client."""
        if not self._marked:
            self._marked = True
            self.audit.mark_undelivered(self.entries, why)


@dataclass
class _SpoolState:
    ok: bool = True
    errors: int = 0
    last_error: str = ""
    failing_since: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class OverrideAudit:
    def __init__(
        self,
        client: aioredis.Redis,
        stream_key: str,
        *,
        spool: Spool | None = None,
        failure_policy: str = "reject",
        max_pending: int = 100_000,
        batch_size: int = 1000,
        stream_maxlen: int = 10_000_000,
        commit_timeout_s: float = COMMIT_TIMEOUT_S,
        temporary_spool: bool = False,
    ) -> None:
        if failure_policy not in POLICIES:
            raise ValueError(f"failure_policy: {failure_policy!r} is not one of {POLICIES}")
        self.client = client
        self.stream_key = stream_key
        self.chains_key = chains_key(stream_key)
        self.batch_size = batch_size
        # Approximate trimming keeps the newest ~10 million records (months of
        # overrides at national volume); review exports older ones first.
        self.stream_maxlen = stream_maxlen
        self.pending: collections.deque[Record] = collections.deque(maxlen=max_pending)
        self.recorded = 0
        self.dropped = 0
        self.refused = 0  # override lines answered REJECT because they could not be audited
        self.spool = spool
        self.failure_policy = failure_policy
        self.commit_timeout_s = commit_timeout_s
        self.temporary_spool = temporary_spool
        self.committer = GroupCommitter(spool) if spool is not None else None
        self._spool_state = _SpoolState()
        self._instance = f"{os.getpid():x}{secrets.token_hex(4)}"
        self._sequence = 0
        self._wake = asyncio.Event()
        self._warned_at: float | None = None
        self._drain_script = client.register_script(_DRAIN_LUA)
        self.replica_wait_ms = REPLICA_WAIT_MS
        self._info_refused = False
        self._pruned_at = 0.0
        self.on_spool_state: Callable[[bool], Awaitable[None]] | None = None
        self._reported_ok = True

    # -- the decision path ----------------------------------------------------

    def record(
        self,
        request: pb.CheckClaimRequest,
        overrides: Sequence[Override],
        index_version: int,
    ) -> OverrideTicket | None:
        """One entry per overridden line, handed to the spool's committer (or,
        without a spool, queued in memory; then None); never blocks."""
        now = f"{time.time():.3f}"
        request_id = REQUEST_ID.get() or ""
        client_identity = CLIENT_IDENTITY.get()
        channel = "PHARMACY" if int(request.channel) == Channel.PHARMACY else "HOSPITAL"
        institution = request.institution_code[:MAX_TEXT]
        claim_id = request.claim_id[:MAX_TEXT]
        entries: list[Entry] = []
        for i, day, reason in overrides:
            line = request.lines[i]
            self._sequence += 1
            line_id = line.line_id[:MAX_TEXT]
            entries.append(
                {
                    "kind": "override",
                    "record_id": record_key(institution, claim_id, line_id),
                    "attempt_id": f"{self._instance}-{self._sequence}",
                    "claim_id": claim_id,
                    "line_id": line_id,
                    "practitioner_code": line.prescriber_code[:MAX_TEXT],
                    "institution_code": institution,
                    "channel": channel,
                    "service_date": str(day_to_yyyymmdd(day)),
                    "overridden_reason": Reason(reason).name,
                    "item_code": line.item_code[:MAX_TEXT],
                    "amount_fen": str(line.amount_fen),
                    "index_version": str(index_version),
                    "request_id": request_id,
                    "client_identity": client_identity,
                    "decided_at": now,
                }
            )
        if self.committer is None:
            self._enqueue(entries)
            return None
        future = self.committer.submit(entries)
        future.add_done_callback(lambda f: self._committed(f, entries, pay=True))
        return OverrideTicket(self, [i for i, _, _ in overrides], entries, future)

    def mark_undelivered(self, entries: Sequence[Entry], why: str) -> None:
        """Follow-up entries: these attempts' answer never reached the client."""
        now = f"{time.time():.3f}"
        markers: list[Entry] = [
            {
                "kind": "undelivered",
                "record_id": e["record_id"],
                "attempt_id": e["attempt_id"],
                "claim_id": e["claim_id"],
                "line_id": e["line_id"],
                "institution_code": e["institution_code"],
                "why": why,
                "decided_at": now,
            }
            for e in entries
        ]
        if self.committer is None:
            self._enqueue(markers)
            return
        future = self.committer.submit(markers)
        # A marker pays nothing: if the spool fails, it waits in memory.
        future.add_done_callback(lambda f: self._committed(f, markers, pay=False))

    def _committed(
        self, future: concurrent.futures.Future[bool], entries: list[Entry], *, pay: bool
    ) -> None:
        """In the committer thread, once a write finished: note the spool state;
        entries the spool refused go to memory if they are paid anyway."""
        error = future.exception()
        state = self._spool_state
        if error is None:
            if not state.ok:
                log.info("override spool writable again", extra={"errors": state.errors})
            state.ok, state.failing_since = True, None
            return
        state.errors += 1
        state.last_error = str(error)[:200]
        if state.ok:
            state.failing_since = time.time()
            log.error(
                "override spool not writable: override lines are "
                + ("paid, audited in memory only" if self.failure_policy == "pay" else "rejected"),
                extra={"error": state.last_error, "spool": str(self.spool_dir)},
            )
        state.ok = False
        if not pay or self.failure_policy == "pay":
            self._enqueue(entries)

    def _enqueue(self, entries: Iterable[Record]) -> None:
        for entry in entries:
            if len(self.pending) == self.pending.maxlen:
                self._drop(1)
            self.pending.append(entry)
        self._wake.set()

    def _drop(self, count: int) -> None:
        if self.dropped == 0 or self.dropped // 1000 != (self.dropped + count) // 1000:
            log.error(
                "override audit queue full: records dropped",
                extra={"dropped_total": self.dropped + count, "max_pending": self.pending.maxlen},
            )
        self.dropped += count

    # -- state ------------------------------------------------------------------

    @property
    def spool_dir(self) -> Path | None:
        return self.spool.directory if self.spool is not None else None

    @property
    def spool_ok(self) -> bool:
        return self._spool_state.ok

    @property
    def spool_errors(self) -> int:
        return self._spool_state.errors

    @property
    def spool_pending(self) -> int:
        return self.spool.pending if self.spool is not None else 0

    def health_details(self) -> dict[str, Any]:
        """The audit's facts for health details and logs."""
        state = self._spool_state
        return {
            "spool_dir": str(self.spool_dir) if self.spool_dir else None,
            "spool_ok": state.ok,
            "spool_errors": state.errors,
            "spool_last_error": state.last_error or None,
            "spool_failing_since": state.failing_since,
            "spool_pending": self.spool_pending,
            "memory_pending": len(self.pending),
            "failure_policy": self.failure_policy,
            "written": self.recorded,
            "dropped": self.dropped,
            "refused": self.refused,
        }

    # -- to Redis -----------------------------------------------------------------

    async def flush(self) -> int:
        """Write every pending record (memory queue, then the spool's undrained
        entries), in batches; return how many were written."""
        written = await self._flush_memory()
        if self.spool is not None:
            written += await self._drain_spool()
        return written

    async def _flush_memory(self) -> int:
        written = 0
        while self.pending:
            count = min(len(self.pending), self.batch_size)
            batch = [self.pending.popleft() for _ in range(count)]
            pipe = self.client.pipeline(transaction=False)
            for record in batch:
                pipe.xadd(
                    self.stream_key,
                    record,  # type: ignore[arg-type]
                    maxlen=self.stream_maxlen,
                    approximate=True,
                )
            try:
                await pipe.execute()
            except BaseException:
                # Written again on the next try (record_id lets readers drop
                # duplicates); whatever no longer fits is dropped, counted.
                assert self.pending.maxlen is not None
                overflow = len(self.pending) + len(batch) - self.pending.maxlen
                if overflow > 0:
                    self._drop(overflow)
                self.pending.extendleft(reversed(batch[: len(batch) - max(overflow, 0)]))
                raise
            self.recorded += len(batch)
            written += len(batch)
        return written

    async def _drain_spool(self) -> int:
        spool = self.spool
        assert spool is not None
        written = 0
        while True:
            entries, cursor = await asyncio.to_thread(spool.read_undrained, self.batch_size)
            if not entries:
                return written
            argv: list[str] = [spool.chain_id, str(self.stream_maxlen)]
            for entry in entries:
                argv += (entry["seq"], str(len(entry)))
                for name, value in entry.items():
                    argv += (name, value)
            added = await self._write_replicated(argv)
            self.recorded += added
            written += added
            await asyncio.to_thread(spool.mark_drained, int(entries[-1]["seq"]), cursor)

    async def _write_replicated(self, argv: list[str]) -> int:
        """Run the drain script; when the primary has a replica online, ``WAIT`` for
        it on the same connection (one pipeline) and raise ``NotReplicatedError``
        if it did not confirm. Returns the entries the script added."""
        keys = [self.stream_key, self.chains_key]
        if not await self._primary_has_replicas():
            return int(await self._drain_script(keys=keys, args=argv))
        pipe = self.client.pipeline(transaction=False)
        await self._drain_script(keys=keys, args=argv, client=pipe)
        pipe.execute_command("WAIT", 1, self.replica_wait_ms)
        added, acked = await pipe.execute()
        if int(acked) < 1:
            self.recorded += int(added)
            raise NotReplicatedError(
                f"override records on the primary, but no replica confirmed them within "
                f"{self.replica_wait_ms} ms; kept in the spool and sent again"
            )
        return int(added)

    async def _primary_has_replicas(self) -> bool:
        """Whether the primary has a replica online (``INFO replication``); False,
        said once, when the gateway's Redis user may not run INFO."""
        if self._info_refused:
            return False
        try:
            info = await self.client.info("replication")
        except ResponseError as exc:
            self._info_refused = True
            log.warning(
                "override audit: INFO refused, so the drain cannot tell whether the primary "
                "has replicas and does not wait for one (a failover may lose the last "
                "records drained); allow +info for the gateway's Redis user",
                extra={"error": str(exc)[:200]},
            )
            return False
        return online_replicas(info) > 0

    async def run(self, interval_s: float = 0.2, max_backoff_s: float = 5.0) -> None:
        """Flush in the background until cancelled."""
        backoff = interval_s
        task = asyncio.current_task()
        while True:
            # A cancellation can be swallowed on the way (Python 3.11's wait_for
            # and timeout when it races their own wake-up, a client library that
            # turns it into a connection error): the task still says it is being
            # cancelled, and then it stops, or shutdown would wait forever.
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_s):
                    await self._wake.wait()
            self._wake.clear()
            await self._report_spool_state()
            try:
                await self.flush()
            except (RedisError, OSError) as exc:
                now = time.monotonic()
                if self._warned_at is None or now - self._warned_at > 60:
                    self._warned_at = now
                    log.warning(
                        "override audit not written yet; retrying",
                        extra={
                            "pending": len(self.pending),
                            "spool_pending": self.spool_pending,
                            "error": str(exc)[:200],
                        },
                    )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, max_backoff_s)
            else:
                if self._warned_at is not None:
                    log.info("override audit written again", extra={"recorded": self.recorded})
                self._warned_at = None
                backoff = interval_s
                self._prune()

    async def _report_spool_state(self) -> None:
        ok = self._spool_state.ok
        if ok != self._reported_ok and self.on_spool_state is not None:
            self._reported_ok = ok
            await self.on_spool_state(ok)

    def _prune(self) -> None:
        now = time.monotonic()
        if self.spool is not None and now - self._pruned_at > 60:
            self._pruned_at = now
            try:
                self.spool.prune()
            except OSError as exc:
                log.warning("override spool: pruning failed", extra={"error": str(exc)[:200]})

    def close(self) -> None:
        """Stop the committer and release the spool lane (after a final ``flush``).
        A temporary spool that is fully in Redis is removed."""
        if self.committer is not None:
            self.committer.close()
        if self.spool is not None:
            drained = self.spool.pending == 0 and not self.pending
            self.spool.close()
            if self.temporary_spool:
                if drained:
                    shutil.rmtree(self.spool.directory, ignore_errors=True)
                else:
                    log.warning(
                        "override spool left undrained in a temporary directory; "
                        "refill with: python -m gateway.ops overrides --refill-from DIR",
                        extra={"spool": str(self.spool.directory)},
                    )


@dataclass(frozen=True)
class OverrideRecord:
    """One audit record as read back, with the time Redis stored it.

    ``delivered`` is False when every attempt at this claim line was marked
    undelivered; ``attempts`` counts the decisions of a retried claim line
    (each gets the same ``record_id``) seen within the reader's window."""

    stream_id: str
    written_at: dt.datetime
    fields: dict[str, str]
    delivered: bool = True
    attempts: int = 1

    def get(self, name: str) -> str:
        return self.fields.get(name, "")


def _stream_ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def _entries(
    client: redis.Redis, stream_key: str, start: str = "-", end: str = "+", page: int = 1000
) -> Iterator[tuple[str, dict[str, str]]]:
    """The raw stream entries in [start, end], oldest first."""
    while True:
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]],
            client.xrange(stream_key, min=start, max=end, count=page),
        )
        for raw_id, raw_fields in entries:
            yield (
                raw_id.decode(),
                {k.decode(): v.decode(errors="replace") for k, v in raw_fields.items()},
            )
        if len(entries) < page:
            return
        start = "(" + entries[-1][0].decode()


@dataclass
class _Pending:
    """A record the reader holds back a while: later entries may add a retry
    or an undelivered marker to it."""

    stream_id: str
    fields: dict[str, str]
    attempts: set[str]
    undelivered: set[str]
    millis: int


def read_overrides(
    client: redis.Redis,
    stream_key: str,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    institution_code: str | None = None,
    practitioner_code: str | None = None,
    limit: int | None = None,
    page: int = 1000,
    window: int = 100_000,
    horizon_s: float = 3600.0,
) -> Iterator[OverrideRecord]:
    """The audit records written in [since, until), oldest first, filtered,
    one per claim line (``record_id``): copies written twice and the retries
    of a claim are folded into the first, undelivered markers applied.

    A record is held back until ``horizon_s`` of later stream time or
    ``window`` later records have been read (a retry or marker later than
    that shows separately), so memory does not grow with the stream."""
    start = "-" if since is None else str(_stream_ms(since))
    end = "+" if until is None else f"({_stream_ms(until)}-0"
    held: collections.OrderedDict[str, _Pending] = collections.OrderedDict()
    by_attempt: dict[str, str] = {}  # attempt_id -> record_id, for markers
    found = 0

    def wanted(fields: dict[str, str]) -> bool:
        return (
            institution_code is None or fields.get("institution_code") == institution_code
        ) and (practitioner_code is None or fields.get("practitioner_code") == practitioner_code)

    def release(item: _Pending) -> OverrideRecord:
        for attempt in item.attempts:
            by_attempt.pop(attempt, None)
        return OverrideRecord(
            item.stream_id,
            dt.datetime.fromtimestamp(item.millis / 1000, dt.UTC),
            item.fields,
            delivered=not item.attempts <= item.undelivered,
            attempts=len(item.attempts),
        )

    def ripe(now_ms: int) -> Iterator[OverrideRecord]:
        while held:
            first = next(iter(held.values()))
            if len(held) <= window and now_ms - first.millis < horizon_s * 1000:
                return
            held.popitem(last=False)
            if wanted(first.fields):
                yield release(first)
            else:
                release(first)

    for stream_id, fields in _entries(client, stream_key, start, end, page):
        millis = int(stream_id.split("-", 1)[0])
        kind = fields.get("kind", "override")
        record_id = fields.get("record_id", "") or stream_id
        attempt = fields.get("attempt_id", "") or record_id
        if kind == "undelivered":
            owner = held.get(by_attempt.get(attempt, ""))
            if owner is not None:
                owner.undelivered.add(attempt)
        elif kind == "override":
            item = held.get(record_id)
            if item is None:
                held[record_id] = _Pending(stream_id, fields, {attempt}, set(), millis)
            else:
                item.attempts.add(attempt)
            by_attempt[attempt] = record_id
        for record in ripe(millis):
            yield record
            found += 1
            if limit is not None and found >= limit:
                return
    while held:
        _, item = held.popitem(last=False)
        if wanted(item.fields):
            yield release(item)
            found += 1
            if limit is not None and found >= limit:
                return


@dataclass(frozen=True)
class ChainProblem:
    chain: str
    kind: str  # "gap", "mismatch", "trimmed-head", "missing-tail"
    detail: str


@dataclass
class ChainReport:
    chains: dict[str, int]  # chain -> entries verified
    problems: list[ChainProblem]


def verify_chains(
    client: redis.Redis, stream_key: str, *, allow_trimmed_head: bool = False
) -> ChainReport:
    """Check every hash chain in the stream: each entry's hash over its
    fields, each prev_hash against the entry before, seqs without gaps from
    1 (or from the first kept when ``allow_trimmed_head``) up to the highest
    seq the gateways recorded in ``{stream}:chains``."""
    seen: dict[str, dict[int, dict[str, str]]] = collections.defaultdict(dict)
    problems: list[ChainProblem] = []
    for _, fields in _entries(client, stream_key):
        chain = fields.get("chain")
        if not chain or not fields.get("seq", "").isdigit():
            continue  # written without the spool (memory-only or pay-on-failure)
        seq = int(fields["seq"])
        other = seen[chain].get(seq)
        if other is not None and other.get("hash") != fields.get("hash"):
            problems.append(ChainProblem(chain, "mismatch", f"seq {seq} written twice, differing"))
        seen[chain][seq] = fields
    high_water = {
        k.decode(): int(v)
        for k, v in cast(dict[bytes, bytes], client.hgetall(chains_key(stream_key))).items()
    }
    counts: dict[str, int] = {}
    for chain in sorted(set(seen) | set(high_water)):
        entries = seen.get(chain, {})
        counts[chain] = len(entries)
        top = max(high_water.get(chain, 0), max(entries, default=0))
        if not entries:
            problems.append(ChainProblem(chain, "missing-tail", f"seq 1..{top} all missing"))
            continue
        first = min(entries)
        if first > 1 and not allow_trimmed_head:
            problems.append(
                ChainProblem(chain, "trimmed-head", f"seq 1..{first - 1} missing (trimmed?)")
            )
        prev_hash: str | None = GENESIS if first == 1 else None
        missing_from: int | None = None
        for seq in range(first, top + 1):
            found = entries.get(seq)
            if found is None:
                if missing_from is None:
                    missing_from = seq
                prev_hash = None
                continue
            if missing_from is not None:
                kind = "gap"
                problems.append(ChainProblem(chain, kind, f"seq {missing_from}..{seq - 1} missing"))
                missing_from = None
            fields = found
            if chain_hash(fields.get("prev_hash", ""), fields) != fields.get("hash"):
                problems.append(ChainProblem(chain, "mismatch", f"seq {seq}: hash does not match"))
            elif prev_hash is not None and fields.get("prev_hash") != prev_hash:
                problems.append(
                    ChainProblem(chain, "mismatch", f"seq {seq}: prev_hash is not seq {seq - 1}'s")
                )
            prev_hash = fields.get("hash")
        if missing_from is not None:
            problems.append(
                ChainProblem(chain, "missing-tail", f"seq {missing_from}..{top} missing")
            )
    return ChainReport(counts, problems)


def refill_from_spool(
    client: redis.Redis,
    stream_key: str,
    spool_dir: str | Path,
    *,
    stream_maxlen: int = 10_000_000,
    batch_size: int = 1000,
) -> int:
    """Write back every spool entry the stream lacks (after an erase or a
    trim); return how many. The refilled entries get today's stream ids."""
    present: dict[str, set[int]] = collections.defaultdict(set)
    for _, fields in _entries(client, stream_key):
        if fields.get("chain") and fields.get("seq", "").isdigit():
            present[fields["chain"]].add(int(fields["seq"]))
    written = 0
    high: dict[str, int] = {}
    pipe = client.pipeline(transaction=False)
    queued = 0
    for entry in read_spool_dir(spool_dir):
        chain, seq = entry["chain"], int(entry["seq"])
        if seq in present[chain]:
            continue
        present[chain].add(seq)
        pipe.xadd(stream_key, entry, maxlen=stream_maxlen, approximate=True)  # type: ignore[arg-type]
        high[chain] = max(high.get(chain, 0), seq)
        queued += 1
        if queued >= batch_size:
            pipe.execute()
            written, queued = written + queued, 0
    if queued:
        pipe.execute()
        written += queued
    key = chains_key(stream_key)
    for chain, seq in high.items():
        current = client.hget(key, chain)
        if current is None or int(cast(bytes, current)) < seq:
            client.hset(key, chain, seq)
    return written
