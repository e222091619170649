"""The emergency-override audit: every override of a real gateway run ends up
in the Redis stream, records wait out a Redis outage, the queue is bounded,
and the reader filters and drops duplicates."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import grpc
import pytest
import redis
import redis.asyncio as aioredis

from contract.snapshot import Keys
from gateway.decide import Policy
from gateway.index import IndexHolder
from gateway.ops.audit import FIELDS, OverrideAudit, read_overrides
from gateway.ops.redis_process import RedisProcess
from gateway.servicer import EligibilityServicer
from proto.eligibility.v1 import eligibility_pb2 as pb
from proto.eligibility.v1 import eligibility_pb2_grpc as pb_grpc
from tests.factory import build_index
from tests.gateway_process import GatewayProcess
from tests.ops_data import (
    ACTIVE,
    DATE,
    HOSPITAL,
    PEOPLE,
    SUSPENDED,
    TERMINATED,
    hospital_claim,
    line,
    publish,
)


def test_every_override_of_a_run_is_recorded(
    redis_url: str, redis_client: redis.Redis, prefix: str
) -> None:
    publish(redis_url, prefix)
    expected: dict[tuple[str, str], str] = {}  # (claim, line) -> overridden reason
    gateway = GatewayProcess(redis_url, prefix).start()
    try:
        with grpc.insecure_channel(gateway.address) as channel:
            stub = pb_grpc.EligibilityGatewayStub(channel)
            for i in range(40):
                lines = [line(ACTIVE, "a", emergency=True)]  # payable: no override
                if i % 2 == 0:
                    lines.append(line(SUSPENDED, "s", 1000 + i, emergency=True))
                    expected[(f"U-{i}", "s")] = "SUSPENDED"
                if i % 3 == 0:
                    lines.append(line(TERMINATED, "t", emergency=True))
                    expected[(f"U-{i}", "t")] = "TERMINATED"
                lines.append(line(SUSPENDED, "n"))  # not an emergency: rejected, no record
                metadata = (("x-request-id", f"req-{i}"),)
                stub.CheckClaim(hospital_claim(f"U-{i}", *lines), timeout=5, metadata=metadata)
            stream = [
                hospital_claim(f"S-{i}", line(SUSPENDED, "1", emergency=True)) for i in range(60)
            ]
            expected.update({(f"S-{i}", "1"): "SUSPENDED" for i in range(60)})
            assert len(list(stub.CheckClaims(iter(stream), timeout=10))) == 60
        # Stopped at once: what the background writer has not written yet is
        # written by the shutdown flush.
        assert gateway.stop() == 0
    finally:
        gateway.stop()

    records = list(read_overrides(redis_client, Keys(prefix).overrides))
    got = {(r.get("claim_id"), r.get("line_id")): r.get("overridden_reason") for r in records}
    assert got == expected
    assert len(records) == len(expected)
    first = next(r for r in records if r.get("claim_id") == "U-0" and r.get("line_id") == "s")
    assert set(first.fields) == set(FIELDS)
    assert first.get("practitioner_code") == SUSPENDED
    assert first.get("institution_code") == HOSPITAL
    assert first.get("channel") == "HOSPITAL"
    assert first.get("service_date") == str(DATE)
    assert first.get("amount_fen") == "1000"
    assert first.get("request_id") == "req-0"
    assert int(first.get("index_version")) >= 1
    streamed = next(r for r in records if r.get("claim_id") == "S-0")
    assert len(streamed.get("request_id")) == 16  # generated: the client sent none


def _servicer(audit: OverrideAudit) -> EligibilityServicer:
    holder = IndexHolder()
    holder.swap(build_index(PEOPLE))
    return EligibilityServicer(holder, Policy(), max_lines_per_claim=100, overrides=audit)


def _emergency(claim_id: str) -> pb.CheckClaimRequest:
    return hospital_claim(claim_id, line(SUSPENDED, "1", emergency=True))


def test_records_wait_while_redis_is_down_and_are_written_when_it_returns(prefix: str) -> None:
    server = RedisProcess().start()
    again = RedisProcess(port=server.port)  # the same server back, on the same port
    stream_key = Keys(prefix).overrides

    async def scenario() -> None:
        client = aioredis.Redis.from_url(server.url, socket_connect_timeout=1)
        audit = OverrideAudit(client, stream_key)
        servicer = _servicer(audit)
        servicer.check_claim(_emergency("before"))
        assert await audit.flush() == 1
        server.stop()
        servicer.check_claim(_emergency("during-1"))
        servicer.check_claim(_emergency("during-2"))
        with pytest.raises((redis.RedisError, OSError)):
            await audit.flush()
        assert [r["claim_id"] for r in audit.pending] == ["during-1", "during-2"]
        again.start()  # empty: persistence is off
        deadline = time.monotonic() + 10
        while True:
            try:
                assert await audit.flush() == 2
                break
            except (redis.RedisError, OSError):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        assert audit.recorded == 3 and not audit.pending and audit.dropped == 0
        await client.aclose()

    try:
        asyncio.run(scenario())
        client = redis.Redis(port=server.port)
        claims = [r.get("claim_id") for r in read_overrides(client, stream_key)]
        client.close()
        assert claims == ["during-1", "during-2"]
    finally:
        again.cleanup()
        server.cleanup()


def test_the_queue_is_bounded_and_counts_what_it_drops(redis_url: str, prefix: str) -> None:
    async def scenario() -> tuple[list[str], int]:
        client = aioredis.Redis.from_url(redis_url)
        audit = OverrideAudit(client, Keys(prefix).overrides, max_pending=3)
        servicer = _servicer(audit)
        for i in range(5):
            servicer.check_claim(_emergency(f"c{i}"))
        kept = [r["claim_id"] for r in audit.pending]
        dropped = audit.dropped
        await audit.flush()
        await client.aclose()
        return kept, dropped

    kept, dropped = asyncio.run(scenario())
    assert kept == ["c2", "c3", "c4"]
    assert dropped == 2


def test_the_reader_filters_by_time_institution_practitioner_and_drops_duplicates(
    redis_client: redis.Redis, prefix: str
) -> None:
    key = Keys(prefix).overrides
    base = 1_780_000_000_000  # ms
    rows = [  # (ms, record_id, claim, institution, practitioner)
        (base, "g-1", "A", "H1", "D1"),
        (base + 1000, "g-2", "B", "H2", "D1"),
        (base + 1500, "g-2", "B", "H2", "D1"),  # written again after a broken connection
        (base + 2000, "g-3", "C", "H1", "D2"),
    ]
    for millis, record_id, claim, institution, practitioner in rows:
        fields = {
            "record_id": record_id,
            "claim_id": claim,
            "institution_code": institution,
            "practitioner_code": practitioner,
        }
        redis_client.xadd(key, fields, id=f"{millis}-0")  # type: ignore[arg-type]

    def claims(**filters: object) -> list[str]:
        return [r.get("claim_id") for r in read_overrides(redis_client, key, page=2, **filters)]  # type: ignore[arg-type]

    def at(millis: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(millis / 1000, dt.UTC)

    assert claims() == ["A", "B", "C"]  # the duplicate written again is left out
    assert claims(institution_code="H1") == ["A", "C"]
    assert claims(practitioner_code="D1") == ["A", "B"]
    assert claims(since=at(base + 1000)) == ["B", "C"]
    assert claims(until=at(base + 2000)) == ["A", "B"]  # until is exclusive
    assert claims(limit=2) == ["A", "B"]
    first = next(read_overrides(redis_client, key))
    assert first.written_at == at(base)


def test_cancelling_the_writer_always_stops_it(redis_url: str, prefix: str) -> None:
    """Shutdown cancels the background writer, also while a record wakes it
    or a write is under way; it must stop every time, never loop on."""

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        audit = OverrideAudit(client, Keys(prefix).overrides)
        servicer = _servicer(audit)
        for i in range(60):
            writer = asyncio.create_task(audit.run(interval_s=0.001))
            await asyncio.sleep(0.0005 * (i % 4))
            servicer.check_claim(_emergency(f"c{i}"))
            await asyncio.sleep(0.0005 * (i % 3))
            writer.cancel()
            done, _ = await asyncio.wait({writer}, timeout=2)
            assert done == {writer}, f"round {i}: the writer did not stop"
            assert writer.cancelled()
        await client.aclose()

    asyncio.run(scenario())
