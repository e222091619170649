"""The emergency-override audit (SPEC §4 rule 5: overrides are recorded for
review, because emergency flags are themselves abused).

Writing: the decision path only appends one small dict per overridden line
to an in-memory queue; a background task writes the queue to the Redis
stream ``Keys.overrides`` (``{prefix}:audit:overrides``) in pipelined
batches of XADD. If Redis is unreachable the records wait in the queue and
are written when it returns (retries back off to 5 s; a warning when the
trouble starts and once a minute while it lasts). The queue is bounded: past
``max_pending`` records the oldest are dropped, counted (``dropped``, also a
metric) and logged, so a long Redis outage cannot exhaust the gateway's
memory. At shutdown the queue is flushed once more.

Delivery is at least once: when a connection breaks in the middle of a
batch, the whole batch is written again. Every record carries a
``record_id`` (this gateway process's id and a sequence number), so a
reader drops the duplicates (``read_overrides`` does).

Each record: ``record_id``, ``claim_id``, ``line_id``, ``practitioner_code``,
``institution_code``, ``channel``, ``service_date`` (YYYYMMDD),
``overridden_reason`` (SUSPENDED or TERMINATED), ``item_code``,
``amount_fen``, ``index_version``, ``request_id`` and ``decided_at`` (Unix
seconds). The stream entry id is Redis's own time of the write, which is
what ``read_overrides`` selects on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import os
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import cast

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from contract.days import day_to_yyyymmdd
from contract.domain import Reason
from gateway.claims import ParsedClaim
from gateway.decide import Decisions
from gateway.ops.logs import REQUEST_ID
from proto.eligibility.v1 import eligibility_pb2 as pb

log = logging.getLogger(__name__)

Record = dict[str, str]

FIELDS = (
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
    "decided_at",
)
MAX_TEXT = 128  # free-text fields a client chooses are cut to this many characters


class OverrideAudit:
    def __init__(
        self,
        client: aioredis.Redis,
        stream_key: str,
        *,
        max_pending: int = 100_000,
        batch_size: int = 1000,
        stream_maxlen: int = 10_000_000,
    ) -> None:
        self.client = client
        self.stream_key = stream_key
        self.batch_size = batch_size
        # Approximate trimming keeps the newest ~10 million records (months of
        # overrides at national volume); review exports older ones first.
        self.stream_maxlen = stream_maxlen
        self.pending: collections.deque[Record] = collections.deque(maxlen=max_pending)
        self.recorded = 0
        self.dropped = 0
        self._instance = f"{os.getpid():x}{secrets.token_hex(4)}"
        self._sequence = 0
        self._wake = asyncio.Event()
        self._warned_at: float | None = None

    def record(
        self,
        request: pb.CheckClaimRequest,
        claim: ParsedClaim,
        line_indexes: Sequence[int],
        decisions: Decisions,
        index_version: int,
    ) -> None:
        """Queue one record per overridden line; never blocks."""
        now = f"{time.time():.3f}"
        request_id = REQUEST_ID.get() or ""
        channel = "PHARMACY" if claim.pharmacy else "HOSPITAL"
        for i in line_indexes:
            line = request.lines[i]
            if len(self.pending) == self.pending.maxlen:
                self._drop(1)
            self._sequence += 1
            self.pending.append(
                {
                    "record_id": f"{self._instance}-{self._sequence}",
                    "claim_id": request.claim_id[:MAX_TEXT],
                    "line_id": line.line_id[:MAX_TEXT],
                    "practitioner_code": line.prescriber_code[:MAX_TEXT],
                    "institution_code": request.institution_code[:MAX_TEXT],
                    "channel": channel,
                    "service_date": str(day_to_yyyymmdd(claim.days[i])),
                    "overridden_reason": Reason(int(decisions.reason[i])).name,
                    "item_code": line.item_code[:MAX_TEXT],
                    "amount_fen": str(line.amount_fen),
                    "index_version": str(index_version),
                    "request_id": request_id,
                    "decided_at": now,
                }
            )
        self._wake.set()

    def _drop(self, count: int) -> None:
        if self.dropped == 0 or self.dropped // 1000 != (self.dropped + count) // 1000:
            log.error(
                "override audit queue full: records dropped",
                extra={"dropped_total": self.dropped + count, "max_pending": self.pending.maxlen},
            )
        self.dropped += count

    async def flush(self) -> int:
        """Write every pending record, in batches; return how many were written."""
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
            try:
                await self.flush()
            except (RedisError, OSError) as exc:
                now = time.monotonic()
                if self._warned_at is None or now - self._warned_at > 60:
                    self._warned_at = now
                    log.warning(
                        "override audit not written yet; retrying",
                        extra={"pending": len(self.pending), "error": str(exc)[:200]},
                    )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, max_backoff_s)
            else:
                if self._warned_at is not None:
                    log.info("override audit written again", extra={"recorded": self.recorded})
                self._warned_at = None
                backoff = interval_s


@dataclass(frozen=True)
class OverrideRecord:
    """One audit record as read back, with the time Redis stored it."""

    stream_id: str
    written_at: dt.datetime
    fields: dict[str, str]

    def get(self, name: str) -> str:
        return self.fields.get(name, "")


def _stream_ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


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
) -> Iterator[OverrideRecord]:
    """The audit records written in [since, until), oldest first, filtered;
    duplicates of a record (same ``record_id``) are left out."""
    start = "-" if since is None else str(_stream_ms(since))
    end = "+" if until is None else f"({_stream_ms(until)}-0"
    # A duplicate is written within seconds of its first copy: remembering
    # the last 100 000 ids finds it without growing with the stream.
    seen: set[str] = set()
    recent: collections.deque[str] = collections.deque()
    found = 0
    while limit is None or found < limit:
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]],
            client.xrange(stream_key, min=start, max=end, count=page),
        )
        for raw_id, raw_fields in entries:
            fields = {k.decode(): v.decode(errors="replace") for k, v in raw_fields.items()}
            record_id = fields.get("record_id", "")
            if record_id:
                if record_id in seen:
                    continue
                seen.add(record_id)
                recent.append(record_id)
                if len(recent) > 100_000:
                    seen.discard(recent.popleft())
            if institution_code is not None and fields.get("institution_code") != institution_code:
                continue
            if (
                practitioner_code is not None
                and fields.get("practitioner_code") != practitioner_code
            ):
                continue
            stream_id = raw_id.decode()
            millis = int(stream_id.split("-", 1)[0])
            yield OverrideRecord(
                stream_id, dt.datetime.fromtimestamp(millis / 1000, dt.UTC), fields
            )
            found += 1
            if limit is not None and found >= limit:
                return
        if len(entries) < page:
            return
        start = "(" + entries[-1][0].decode()
