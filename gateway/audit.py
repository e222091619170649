"""The emergency-override audit (SPEC §4 rule 5: overrides are recorded for
review, because emergency flags are themselves abused).

The decision path only appends to an in-memory queue; a background task
writes the records to a Redis stream in batches. If Redis is unreachable
the records wait in the queue (bounded; the count of dropped records is
logged) and are written when it returns.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from proto.eligibility.v1 import eligibility_pb2 as pb

from .claims import ParsedClaim
from .days import day_to_yyyymmdd
from .decide import Decisions
from .domain import Reason

log = logging.getLogger(__name__)

Record = dict[str, str]


class OverrideAudit:
    def __init__(
        self,
        client: aioredis.Redis,
        stream_key: str,
        *,
        max_pending: int = 100_000,
        stream_maxlen: int = 10_000_000,
    ) -> None:
        self.client = client
        self.stream_key = stream_key
        self.stream_maxlen = stream_maxlen
        self.pending: collections.deque[Record] = collections.deque(maxlen=max_pending)
        self.recorded = 0
        self.dropped = 0
        self._wake = asyncio.Event()

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
        for i in line_indexes:
            line = request.lines[i]
            if len(self.pending) == self.pending.maxlen:
                self.dropped += 1
            self.pending.append(
                {
                    "claim_id": request.claim_id,
                    "line_id": line.line_id[:128],
                    "practitioner_code": line.prescriber_code,
                    "institution_code": request.institution_code,
                    "channel": "PHARMACY" if claim.pharmacy else "HOSPITAL",
                    "service_date": str(day_to_yyyymmdd(claim.days[i])),
                    "overridden_reason": Reason(int(decisions.reason[i])).name,
                    "item_code": line.item_code[:128],
                    "amount_fen": str(line.amount_fen),
                    "index_version": str(index_version),
                    "decided_at": now,
                }
            )
        self._wake.set()

    async def flush(self) -> int:
        """Write every pending record; return how many were written."""
        batch = [self.pending.popleft() for _ in range(len(self.pending))]
        if not batch:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for record in batch:
            pipe.xadd(self.stream_key, record, maxlen=self.stream_maxlen, approximate=True)  # type: ignore[arg-type]
        try:
            await pipe.execute()
        except BaseException:
            self.pending.extendleft(reversed(batch))  # written on the next try
            raise
        self.recorded += len(batch)
        return len(batch)

    async def run(self, interval_s: float = 0.2) -> None:
        """Flush in the background until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval_s)
            self._wake.clear()
            try:
                await self.flush()
            except (RedisError, OSError) as exc:
                log.warning("override audit not written yet", extra={"error": str(exc)[:200]})
                await asyncio.sleep(1.0)
