"""Prometheus metrics of the real gateway (``python -m gateway --metrics-port``),
scraped over HTTP after real gRPC calls; plus the claim path's counters on their own."""

from __future__ import annotations

import asyncio
import platform
import queue
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
import redis
import redis.asyncio as aioredis

from contract.changes import index_version
from contract.domain import Status
from contract.snapshot import Keys
from contract.version import package_version
from gateway.claimpath import LINES_BUCKETS, ClaimPath, CompiledPath, PurePath
from gateway.decide import Policy
from gateway.feed import CHANGE_LAG_WINDOW_S, SnapshotFollower
from gateway.index import IndexHolder
from gateway.ops.metrics import ClaimMetrics, GatewayMetrics
from gateway.ops.redis_process import free_port
from loader.changes import publish_change
from proto.eligibility.v1 import eligibility_pb2 as pb
from proto.eligibility.v1 import eligibility_pb2_grpc as pb_grpc
from tests.factory import Person, build_arrays, build_index, day
from tests.gateway_process import GatewayProcess
from tests.ops_data import (
    ACTIVE,
    ELSEWHERE,
    OTHER_HOSPITAL,
    OTHER_SUSPENDED,
    SINCE,
    SUSPENDED,
    TERMINATED,
    hospital_claim,
    line,
    pharmacy_claim,
    publish,
    scrape,
    value,
    wait_until,
)

SERVICE = "eligibility.v1.EligibilityGateway"


@pytest.fixture(scope="module")
def gateway(redis_url: str) -> Iterator[tuple[GatewayProcess, int, int]]:
    prefix = "metrics-e2e"
    version = publish(redis_url, prefix)
    metrics_port = free_port()
    with GatewayProcess(redis_url, prefix, "--metrics-port", str(metrics_port)) as process:
        yield process, metrics_port, version


def test_metrics_count_what_the_calls_decided(gateway: tuple[GatewayProcess, int, int]) -> None:
    process, port, version = gateway
    with grpc.insecure_channel(process.address) as channel:
        stub = pb_grpc.EligibilityGatewayStub(channel)
        stub.CheckClaim(
            hospital_claim(
                "M-1",
                line(ACTIVE, "1", 100),
                line(SUSPENDED, "2", 200),
                line(SUSPENDED, "3", 300, emergency=True),
                line(TERMINATED, "4", 400),
                line("D1101-BAD", "5", 500),
            ),
            timeout=5,
        )
        stub.CheckClaim(pharmacy_claim("M-2", line(ELSEWHERE, "1", 50)), timeout=5)
        with pytest.raises(grpc.RpcError) as info:
            stub.CheckClaim(hospital_claim("M-3"), timeout=5)  # no lines
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    wait_until(
        lambda: value(scrape(port), "eligibility_override_audit_written_total") == 1,
        "the override audit record",
    )
    samples = scrape(port)

    def lines(decision: str, reason: str, channel: str = "HOSPITAL") -> float | None:
        return value(
            samples,
            "eligibility_lines_decided_total",
            decision=decision,
            reason=reason,
            channel=channel,
        )

    assert lines("PAY", "OK") == 1
    assert lines("REJECT", "SUSPENDED") == 1
    assert lines("PAY_EMERGENCY_OVERRIDE", "SUSPENDED") == 1
    assert lines("REJECT", "TERMINATED") == 1
    assert lines("REJECT", "INVALID_PRESCRIBER_CODE") == 1
    assert lines("PAY", "OK", "PHARMACY") == 1
    assert lines("PAY", "WARNED") is None  # never seen: not exported
    overrides = "eligibility_emergency_overrides_total"
    assert value(samples, overrides, reason="SUSPENDED", channel="HOSPITAL") == 1
    assert value(samples, overrides, reason="TERMINATED", channel="HOSPITAL") == 0
    fen = "eligibility_rejected_amount_fen_total"
    assert value(samples, fen, reason="SUSPENDED", channel="HOSPITAL") == 200
    assert value(samples, fen, reason="TERMINATED", channel="HOSPITAL") == 400
    assert value(samples, fen, reason="INVALID_PRESCRIBER_CODE", channel="HOSPITAL") == 500
    assert value(samples, "eligibility_claim_lines_count", channel="HOSPITAL") == 1
    assert value(samples, "eligibility_claim_lines_sum", channel="HOSPITAL") == 5
    assert value(samples, "eligibility_claim_lines_bucket", channel="HOSPITAL", le="2.0") == 0
    assert value(samples, "eligibility_claim_lines_bucket", channel="HOSPITAL", le="5.0") == 1
    assert value(samples, "eligibility_claim_lines_bucket", channel="PHARMACY", le="1.0") == 1

    rpcs = "eligibility_rpcs_total"
    assert value(samples, rpcs, service=SERVICE, method="CheckClaim", code="OK") == 2
    invalid = value(samples, rpcs, service=SERVICE, method="CheckClaim", code="INVALID_ARGUMENT")
    assert invalid == 1
    count = value(
        samples, "eligibility_rpc_duration_seconds_count", service=SERVICE, method="CheckClaim"
    )
    assert count == 3
    health_ok = value(samples, rpcs, service="grpc.health.v1.Health", method="Check", code="OK")
    assert health_ok is not None and health_ok >= 1

    # index_version: snapshot version and change sequence (contract.changes).
    assert value(samples, "eligibility_index_version") == index_version(version, 0)
    assert value(samples, "eligibility_index_practitioners") == 6
    size = value(samples, "eligibility_index_size_bytes")
    assert size is not None and size > 0
    age = value(samples, "eligibility_index_age_seconds")
    assert age is not None and 0 <= age < 600
    published = value(samples, "eligibility_index_published_timestamp_seconds")
    assert published is not None and abs(time.time() - age - published) < 5
    assert value(samples, "eligibility_redis_up") == 1
    assert value(samples, "eligibility_redis_unreachable_seconds") == 0
    assert value(samples, "eligibility_override_audit_pending") == 0
    assert value(samples, "eligibility_override_audit_dropped_total") == 0
    assert value(samples, "process_resident_memory_bytes") is not None
    build = {"version": package_version(), "python": platform.python_version()}
    assert value(samples, "eligibility_build_info", grpc=grpc.__version__, **build) == 1


def test_an_open_stream_is_in_flight_and_its_messages_are_counted(
    gateway: tuple[GatewayProcess, int, int],
) -> None:
    process, port, _ = gateway
    requests: queue.Queue[pb.CheckClaimRequest | None] = queue.Queue()

    def feed() -> Iterator[pb.CheckClaimRequest]:
        while (request := requests.get()) is not None:
            yield request

    in_flight = "eligibility_rpcs_in_flight"
    before = scrape(port)
    sent = value(before, "eligibility_stream_messages_total", service=SERVICE, method="CheckClaims")
    with grpc.insecure_channel(process.address) as channel:
        stub = pb_grpc.EligibilityGatewayStub(channel)
        responses = stub.CheckClaims(feed(), timeout=10)
        for i in range(3):
            requests.put(hospital_claim(f"S-{i}", line(ACTIVE, "1")))
            assert next(iter(responses)).claim_id == f"S-{i}"
        assert value(scrape(port), in_flight, service=SERVICE, method="CheckClaims") == 1
        requests.put(None)
        assert list(responses) == []
    wait_until(
        lambda: value(scrape(port), in_flight, service=SERVICE, method="CheckClaims") == 0,
        "the stream to finish",
    )
    after = scrape(port)
    messages = value(
        after, "eligibility_stream_messages_total", service=SERVICE, method="CheckClaims"
    )
    assert messages == (sent or 0) + 3
    assert value(after, "eligibility_rpcs_total", service=SERVICE, method="CheckClaims", code="OK")


def test_a_stream_past_its_deadline_ends_and_leaves_no_call_in_flight(
    gateway: tuple[GatewayProcess, int, int],
) -> None:
    process, port, _ = gateway
    release = threading.Event()

    def slow_client() -> Iterator[pb.CheckClaimRequest]:
        yield hospital_claim("D-1", line(ACTIVE, "1"))
        release.wait(10)  # the client goes quiet past its own deadline

    with grpc.insecure_channel(process.address) as channel:
        stub = pb_grpc.EligibilityGatewayStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            list(stub.CheckClaims(slow_client(), timeout=0.5))
        release.set()
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # The server goes on answering.
        assert stub.CheckClaim(hospital_claim("D-2", line(ACTIVE, "1")), timeout=5).lines
    in_flight = "eligibility_rpcs_in_flight"
    wait_until(
        lambda: value(scrape(port), in_flight, service=SERVICE, method="CheckClaims") == 0,
        "the expired stream to be released",
    )
    samples = scrape(port)
    ended = {
        code: value(
            samples, "eligibility_rpcs_total", service=SERVICE, method="CheckClaims", code=code
        )
        for code in ("DEADLINE_EXCEEDED", "CANCELLED")
    }
    assert any(ended.values()), ended


def test_a_live_change_moves_the_version_but_not_the_snapshot_age(
    gateway: tuple[GatewayProcess, int, int], redis_url: str
) -> None:
    _, port, version = gateway
    before = scrape(port)
    client = redis.Redis.from_url(redis_url)
    try:  # OTHER_SUSPENDED's suspension is lifted (an appeal upheld)
        change = build_arrays([Person(OTHER_SUSPENDED, [(OTHER_HOSPITAL, SINCE, None)])])
        publish_change(client, Keys("metrics-e2e"), change)
    finally:
        client.close()
    applied = "eligibility_change_feed_changes_applied_total"
    wait_until(lambda: value(scrape(port), applied) == 1, "the change to be applied")
    after = scrape(port)
    new_version, old_version = (
        value(after, "eligibility_index_version"),
        value(before, "eligibility_index_version"),
    )
    assert new_version is not None and old_version is not None and new_version > old_version
    assert value(after, "eligibility_index_snapshot_version") == version
    loaded = "eligibility_index_loaded_timestamp_seconds"
    assert value(after, loaded) == value(before, loaded)
    lag = value(after, "eligibility_change_feed_lag_seconds")
    assert lag is not None and 0 <= lag < 60


H1, P1 = "H11010500001", "P11010500001"
SUSPENDED_CODE, PRINCIPAL = "D110105000003", "HY110105000001"


def _claims() -> list[pb.CheckClaimRequest]:
    hospital = pb.CheckClaimRequest(
        claim_id="h",
        institution_code=H1,
        channel=pb.CHANNEL_HOSPITAL,
        service_date=20250701,
        lines=[
            pb.ClaimLine(line_id="1", prescriber_code=SUSPENDED_CODE, amount_fen=10),
            pb.ClaimLine(line_id="2", prescriber_code=SUSPENDED_CODE, amount_fen=20),
            pb.ClaimLine(line_id="3", prescriber_code="D110105000001", amount_fen=30),
            pb.ClaimLine(line_id="4", prescriber_code="D999999999999", amount_fen=40),
        ],
    )
    pharmacy = pb.CheckClaimRequest(
        claim_id="p",
        institution_code=P1,
        channel=pb.CHANNEL_PHARMACY,
        principal_code=PRINCIPAL,
        service_date=20250701,
        lines=[pb.ClaimLine(line_id=str(i), amount_fen=7) for i in range(1500)],
    )
    return [hospital, pharmacy]


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "pure-python"])
def test_claim_metrics_export_what_the_claim_path_counted(compiled: bool) -> None:
    index = build_index(
        [
            Person("D110105000001", [(H1, "2020-01-01", None)]),
            Person(
                SUSPENDED_CODE,
                [(H1, "2020-01-01", None)],
                [("2025-06-01", Status.SUSPENDED, "2025-08-31")],
            ),
            Person(PRINCIPAL, [(P1, "2020-01-01", None)]),
        ]
    )
    path: ClaimPath = (CompiledPath if compiled else PurePath)(Policy(), 2000)
    for claim in _claims():
        assert isinstance(path.check(index, claim.SerializeToString(), day("2026-01-01")), bytes)
    metrics = ClaimMetrics(path.counters)
    families = {f.name: f for f in metrics.collect()}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }

    def sample(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    hospital = {"channel": "HOSPITAL"}
    lines = "eligibility_lines_decided_total"
    assert sample(lines, **hospital, decision="REJECT", reason="SUSPENDED") == 2
    fen = "eligibility_rejected_amount_fen_total"
    assert sample(fen, **hospital, reason="SUSPENDED") == 30
    assert sample(fen, **hospital, reason="NOT_REGISTERED") == 40
    pharmacy = {"channel": "PHARMACY"}
    assert sample(lines, **pharmacy, decision="PAY", reason="OK") == 1500
    assert sample("eligibility_claim_lines_sum", **pharmacy) == 1500
    top = str(float(LINES_BUCKETS[-1]))
    assert sample("eligibility_claim_lines_bucket", **pharmacy, le=top) == 0
    assert sample("eligibility_claim_lines_bucket", **pharmacy, le="+Inf") == 1
    assert sample("eligibility_claim_lines_bucket", **hospital, le="2.0") == 0
    assert sample("eligibility_claim_lines_bucket", **hospital, le="5.0") == 1


def test_no_created_series_beside_counters_and_histograms(
    gateway: tuple[GatewayProcess, int, int],
) -> None:
    _, port, _ = gateway
    samples = scrape(port)
    assert value(samples, "eligibility_rpcs_total", service=SERVICE, method="CheckClaim", code="OK")
    assert sorted({name for name, _ in samples if name.endswith("_created")}) == []


def _collected(metrics: GatewayMetrics) -> dict[str, float]:
    return {s.name: s.value for f in metrics.registry.collect() for s in f.samples if not s.labels}


def test_changes_taken_in_by_a_reload_are_counted_and_the_lag_ages_out(
    redis_url: str, prefix: str
) -> None:
    """A change the stream did not bring (trimmed, or published while the
    follower was away) arrives by a reload: counted in changes_applied, its
    lag measured from its stream entry; the lag gauge reads 0 once the last
    change is older than CHANGE_LAG_WINDOW_S (issue 13)."""
    keys = Keys(prefix)
    publish(redis_url, prefix)

    async def body() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            holder = IndexHolder()
            follower = SnapshotFollower(client, keys, holder)
            metrics = GatewayMetrics(holder, follower=follower)
            assert await follower.refresh()  # the first load: its changes are the start
            assert (follower.changes_applied, follower.change_lag_seconds) == (0, None)
            assert "eligibility_change_feed_lag_seconds" not in _collected(metrics)

            sync = redis.Redis.from_url(redis_url)
            try:  # two changes while the follower is not reading the stream
                for code in (OTHER_SUSPENDED, SUSPENDED):
                    change = build_arrays([Person(code, [(OTHER_HOSPITAL, SINCE, None)])])
                    publish_change(sync, keys, change)
            finally:
                sync.close()
            assert await follower.refresh()  # the reload takes both in
            assert follower.changes_applied == 2
            lag = follower.change_lag_seconds
            assert lag is not None and 0 <= lag < 30
            samples = _collected(metrics)
            assert samples["eligibility_change_feed_changes_applied_total"] == 2
            assert samples["eligibility_change_feed_lag_seconds"] == pytest.approx(lag, abs=1)

            assert follower.last_change_at is not None
            follower.last_change_at -= CHANGE_LAG_WINDOW_S + 1  # as a minute later
            assert follower.change_lag_seconds == 0.0
            assert _collected(metrics)["eligibility_change_feed_lag_seconds"] == 0.0
        finally:
            await client.aclose()

    asyncio.run(body())
