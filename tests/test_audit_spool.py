"""The override spool (gateway.ops.spool) and the durable audit on top of it:
group commit, a torn tail after kill -9, lanes, the drain to Redis exactly
once, a full disk (``/dev/full``: a real ENOSPC), undelivered answers, the
hash chain and its verification, refill after an erased stream, and a real
gateway killed with SIGKILL under load while Redis is down."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import grpc
import pytest
import redis
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from contract.snapshot import Keys
from gateway.decide import Policy
from gateway.index import IndexHolder
from gateway.ops.audit import (
    FIELDS,
    OverrideAudit,
    read_overrides,
    record_key,
    refill_from_spool,
    verify_chains,
)
from gateway.ops.metrics import GatewayMetrics
from gateway.ops.redis_process import RedisProcess
from gateway.ops.spool import GENESIS, GroupCommitter, Spool, chain_hash, read_spool_dir
from gateway.server import AUDIT_HEALTH_NAME
from gateway.servicer import EligibilityServicer
from proto.eligibility.v1 import eligibility_pb2 as pb
from proto.eligibility.v1 import eligibility_pb2_grpc as pb_grpc
from tests.factory import build_index
from tests.gateway_process import GatewayProcess
from tests.ops_data import HOSPITAL, PEOPLE, SUSPENDED, hospital_claim, line, publish


def _entry(n: int) -> dict[str, str]:
    return {"kind": "override", "record_id": f"r{n}", "attempt_id": f"a{n}", "claim_id": f"c{n}"}


# -- the spool alone --------------------------------------------------------


def test_entries_are_chained_and_survive_a_torn_tail(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([_entry(1), _entry(2)])
    spool.append([_entry(3)])
    assert spool.committed_seq == 3
    spool.close()
    segment = next((tmp_path / "lane-0").glob("*.jsonl"))
    with segment.open("ab") as f:  # a write cut short by kill -9
        f.write(b'{"kind":"override","seq":"4"')
    again = Spool(tmp_path)
    assert again.lane.name == "lane-0" and again.committed_seq == 3
    again.append([_entry(4)])
    entries = list(read_spool_dir(tmp_path))
    assert [e["seq"] for e in entries] == ["1", "2", "3", "4"]
    prev = GENESIS
    for entry in entries:
        assert entry["prev_hash"] == prev
        assert entry["hash"] == chain_hash(prev, entry)
        prev = entry["hash"]
    assert len({e["chain"] for e in entries}) == 1
    again.close()


def test_a_second_process_on_the_directory_takes_its_own_lane(tmp_path: Path) -> None:
    first, second = Spool(tmp_path), Spool(tmp_path)
    assert (first.lane.name, second.lane.name) == ("lane-0", "lane-1")
    assert first.chain_id != second.chain_id
    first.close()
    third = Spool(tmp_path)  # lane-0 is free again: taken over, chain continued
    assert third.lane.name == "lane-0" and third.chain_id == first.chain_id
    second.close()
    third.close()


def test_concurrent_submissions_share_one_fsync(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    committer = GroupCommitter(spool)
    futures = []
    barrier = threading.Barrier(8)

    def submit(k: int) -> None:
        barrier.wait()
        for i in range(50):
            futures.append(committer.submit([_entry(k * 1000 + i)]))

    threads = [threading.Thread(target=submit, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(f.result(timeout=10) for f in futures)
    committer.close()
    assert committer.entries == 400
    assert committer.commits < 400  # group commit: fewer fsyncs than records
    spool.close()


def test_drained_segments_are_pruned_only_after_the_retention(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=200, retention_s=3600)
    for i in range(6):
        spool.append([_entry(i)])
    entries, cursor = spool.read_undrained(100)
    assert [e["seq"] for e in entries] == [str(i) for i in range(1, 7)]
    spool.mark_drained(6, cursor)
    segments = len(list(spool.lane.glob("*.jsonl")))
    assert segments > 2
    assert spool.prune() == 0  # drained, but younger than the retention
    assert spool.prune(now=os.path.getmtime(spool.lane / "lock") + 7200) == segments - 1
    spool.close()


# -- the audit on the spool ------------------------------------------------------


def _servicer(audit: OverrideAudit) -> EligibilityServicer:
    holder = IndexHolder()
    holder.swap(build_index(PEOPLE))
    return EligibilityServicer(holder, Policy(), max_lines_per_claim=100, overrides=audit)


async def _check(
    servicer: EligibilityServicer, request: pb.CheckClaimRequest, context: object
) -> pb.CheckClaimResponse:
    """servicer.CheckClaim, which takes and returns the wire bytes, on messages."""
    data = await servicer.CheckClaim(request.SerializeToString(), context)  # type: ignore[arg-type]
    return pb.CheckClaimResponse.FromString(data)


def _emergency(claim_id: str, line_id: str = "1") -> pb.CheckClaimRequest:
    return hospital_claim(claim_id, line(SUSPENDED, line_id, emergency=True))


class _Context:
    """What CheckClaim uses of a grpc.aio context, for calls without a server."""

    def __init__(self) -> None:
        self.callbacks: list[object] = []
        self.was_cancelled = False

    def add_done_callback(self, callback: object) -> None:
        self.callbacks.append(callback)

    def cancelled(self) -> bool:
        return self.was_cancelled

    def finish(self) -> None:
        for callback in self.callbacks:
            callback(self)  # type: ignore[operator]


@pytest.fixture
def spool_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "spool"


def test_spooled_records_reach_redis_once_and_the_chain_verifies(
    redis_url: str, redis_client: redis.Redis, prefix: str, spool_dir: Path
) -> None:
    key = Keys(prefix).overrides

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        audit = OverrideAudit(client, key, spool=Spool(spool_dir))
        servicer = _servicer(audit)
        for i in range(5):
            response = await _check(servicer, _emergency(f"C-{i}"), _Context())
            assert response.lines[0].decision == pb.DECISION_PAY_EMERGENCY_OVERRIDE
        # The same claim again (a retry): reviewed once, two attempts.
        await _check(servicer, _emergency("C-0"), _Context())
        assert audit.spool_pending == 6
        assert await audit.flush() == 6
        # Drained again (as after a broken connection or a restart): nothing new.
        assert audit.spool is not None
        audit.spool.mark_drained(0, (audit.spool._segments[0], 0))
        audit.spool.drained_seq = 0
        assert await audit.flush() == 0
        audit.close()
        await client.aclose()

    asyncio.run(scenario())
    assert redis_client.xlen(key) == 6
    records = list(read_overrides(redis_client, key))
    assert [r.get("claim_id") for r in records] == ["C-0", "C-1", "C-2", "C-3", "C-4"]
    assert records[0].attempts == 2 and records[0].delivered
    assert set(records[0].fields) == set(FIELDS)
    assert records[0].get("record_id") == record_key(HOSPITAL, "C-0", "1")
    report = verify_chains(redis_client, key)
    assert report.problems == [] and list(report.chains.values()) == [6]


def test_an_undelivered_answer_is_marked(
    redis_url: str, redis_client: redis.Redis, prefix: str, spool_dir: Path
) -> None:
    key = Keys(prefix).overrides

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        audit = OverrideAudit(client, key, spool=Spool(spool_dir))
        servicer = _servicer(audit)
        delivered, lost = _Context(), _Context()
        await _check(servicer, _emergency("OK"), delivered)
        await _check(servicer, _emergency("LOST"), lost)
        delivered.finish()
        lost.was_cancelled = True  # the deadline expired before the answer was sent
        lost.finish()
        lost.finish()  # marked once however often it is said
        await asyncio.sleep(0.1)
        await audit.flush()
        audit.close()
        await client.aclose()

    asyncio.run(scenario())
    assert redis_client.xlen(key) == 3  # two records, one marker
    delivered = {r.get("claim_id"): r.delivered for r in read_overrides(redis_client, key)}
    assert delivered == {"OK": True, "LOST": False}
    assert verify_chains(redis_client, key).problems == []


def _full_disk(spool: Spool) -> int:
    """Point the spool's open segment at /dev/full: every write gets ENOSPC."""
    assert spool._fd is not None
    real = spool._fd
    spool._fd = os.open("/dev/full", os.O_WRONLY)
    return real


def test_a_full_disk_rejects_overrides_and_says_so(
    redis_url: str, redis_client: redis.Redis, prefix: str, spool_dir: Path
) -> None:
    key = Keys(prefix).overrides

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        spool = Spool(spool_dir)
        audit = OverrideAudit(client, key, spool=spool)
        health: list[bool] = []

        async def on_state(ok: bool) -> None:
            health.append(ok)

        audit.on_spool_state = on_state
        metrics = GatewayMetrics(IndexHolder(), audit=audit)
        servicer = _servicer(audit)
        await _check(servicer, _emergency("before"), _Context())
        real = _full_disk(spool)
        response = await _check(servicer, _emergency("full"), _Context())
        line0 = response.lines[0]
        assert (line0.decision, line0.reason) == (pb.DECISION_REJECT, pb.REASON_SUSPENDED)
        assert response.rejected_lines == 1
        assert not audit.spool_ok and audit.spool_errors == 1 and audit.refused == 1
        assert audit.health_details()["spool_ok"] is False
        await audit._report_spool_state()
        samples = {s.name: s.value for family in metrics.registry.collect() for s in family.samples}
        assert samples["eligibility_override_spool_errors_total"] == 1
        assert samples["eligibility_override_spool_up"] == 0
        assert samples["eligibility_override_refused_total"] == 1
        assert samples["eligibility_override_spool_pending"] == 1
        os.close(spool._fd)  # type: ignore[arg-type]
        spool._fd = real  # space again
        response = await _check(servicer, _emergency("after"), _Context())
        assert response.lines[0].decision == pb.DECISION_PAY_EMERGENCY_OVERRIDE
        await audit._report_spool_state()
        assert health == [False, True]
        await audit.flush()
        audit.close()
        await client.aclose()

    asyncio.run(scenario())
    claims = [r.get("claim_id") for r in read_overrides(redis_client, key)]
    assert claims == ["before", "after"]  # the rejected line is no override: no record
    assert verify_chains(redis_client, key).problems == []


def test_with_the_pay_policy_a_full_disk_pays_and_keeps_the_record_in_memory(
    redis_url: str, redis_client: redis.Redis, prefix: str, spool_dir: Path
) -> None:
    key = Keys(prefix).overrides

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        spool = Spool(spool_dir)
        audit = OverrideAudit(client, key, spool=spool, failure_policy="pay")
        servicer = _servicer(audit)
        await _check(servicer, _emergency("before"), _Context())
        _full_disk(spool)
        response = await _check(servicer, _emergency("full"), _Context())
        assert response.lines[0].decision == pb.DECISION_PAY_EMERGENCY_OVERRIDE
        assert [r["claim_id"] for r in audit.pending] == ["full"]
        await audit.flush()
        await client.aclose()

    asyncio.run(scenario())
    claims = sorted(r.get("claim_id") for r in read_overrides(redis_client, key))
    assert claims == ["before", "full"]


def test_verify_finds_tampering_and_refill_restores_an_erased_stream(
    redis_url: str, redis_client: redis.Redis, prefix: str, spool_dir: Path
) -> None:
    key = Keys(prefix).overrides

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        audit = OverrideAudit(client, key, spool=Spool(spool_dir))
        servicer = _servicer(audit)
        for i in range(5):
            await _check(servicer, _emergency(f"C-{i}"), _Context())
        await audit.flush()
        audit.close()
        await client.aclose()

    asyncio.run(scenario())
    assert verify_chains(redis_client, key).problems == []
    stream = cast(list[tuple[bytes, dict[bytes, bytes]]], redis_client.xrange(key))
    ids = [raw_id for raw_id, _ in stream]
    redis_client.xdel(key, ids[2])  # one record removed
    kinds = [p.kind for p in verify_chains(redis_client, key).problems]
    assert kinds == ["gap"]
    redis_client.xtrim(key, maxlen=0)  # the whole stream erased (XADD ... MAXLEN 0)
    kinds = [p.kind for p in verify_chains(redis_client, key).problems]
    assert kinds == ["missing-tail"]
    assert refill_from_spool(redis_client, key, spool_dir) == 5
    assert verify_chains(redis_client, key).problems == []
    assert refill_from_spool(redis_client, key, spool_dir) == 0
    fields = cast(list[tuple[bytes, dict[bytes, bytes]]], redis_client.xrange(key))[0][1]
    forged = {k.decode(): v.decode() for k, v in fields.items()}  # an amount edited
    forged["amount_fen"] = "999999"
    redis_client.xadd(key, forged)  # type: ignore[arg-type]
    kinds = [p.kind for p in verify_chains(redis_client, key).problems]
    assert "mismatch" in kinds
    claims = [r.get("claim_id") for r in read_overrides(redis_client, key)]
    assert sorted(claims) == [f"C-{i}" for i in range(5)]


# -- a real gateway, killed ---------------------------------------------------------


def _health(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status)


@pytest.mark.slow
def test_kill_9_during_a_redis_outage_loses_no_override(prefix: str, tmp_path: Path) -> None:
    """Overrides answered while Redis is down, then SIGKILL: the gateway
    restarted on the same spool with Redis back writes every one, once."""
    server = RedisProcess().start()
    again = RedisProcess(port=server.port)
    spool = tmp_path / "spool"
    args = ("--audit-spool-dir", str(spool))
    try:
        publish(server.url, prefix)
        gateway = GatewayProcess(server.url, prefix, *args).start()
        paid: set[tuple[str, str]] = set()
        try:
            assert _health(gateway.address, AUDIT_HEALTH_NAME) == 1  # SERVING
            server.stop()  # Redis gone: the gateway decides from its held index
            with grpc.insecure_channel(gateway.address) as channel:
                stub = pb_grpc.EligibilityGatewayStub(channel)
                calls = [
                    stub.CheckClaim.future(
                        hospital_claim(
                            f"K-{i}",
                            line(SUSPENDED, "a", emergency=True),
                            line(SUSPENDED, "b", emergency=True),
                        ),
                        timeout=10,
                    )
                    for i in range(300)
                ]
                for call in calls:
                    response = call.result()
                    for decided in response.lines:
                        if decided.decision == pb.DECISION_PAY_EMERGENCY_OVERRIDE:
                            paid.add((response.claim_id, decided.line_id))
            assert gateway.proc is not None
            gateway.proc.send_signal(signal.SIGKILL)
            gateway.proc.wait()
        finally:
            gateway.stop()
        assert len(paid) == 600
        again.start()  # empty: persistence is off
        publish(again.url, prefix)
        restarted = GatewayProcess(again.url, prefix, *args).start()
        try:
            client = redis.Redis.from_url(again.url)
            key = Keys(prefix).overrides
            deadline = time.monotonic() + 10
            while client.xlen(key) < 600 and time.monotonic() < deadline:
                time.sleep(0.05)
            records = list(read_overrides(client, key))
            got = [(r.get("claim_id"), r.get("line_id")) for r in records]
            assert len(got) == len(set(got)) == 600
            assert set(got) == paid
            assert client.xlen(key) == 600  # exactly once in the stream too
            assert verify_chains(client, key).problems == []
            client.close()
        finally:
            restarted.stop()
    finally:
        again.cleanup()
        server.cleanup()
