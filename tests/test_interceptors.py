"""Request ids through the real gateway: the client's ``x-request-id`` comes
back in the trailing metadata (a new one when it sent none or a bad one),
and the gateway's per-RPC log lines carry it; at info level no claim
contents reach the log."""

from __future__ import annotations

import queue
import re
from collections.abc import Iterator

import grpc
import orjson
import pytest

from gateway.ops.redis_process import free_port
from proto.eligibility.v1 import eligibility_pb2 as pb
from proto.eligibility.v1 import eligibility_pb2_grpc as pb_grpc
from tests.gateway_process import GatewayProcess
from tests.ops_data import (
    ACTIVE,
    SUSPENDED,
    hospital_claim,
    line,
    publish,
    scrape,
    wait_until,
)
from tests.ops_data import (
    value as sample,
)


@pytest.fixture(scope="module")
def debug_gateway(redis_url: str) -> Iterator[GatewayProcess]:
    prefix = "interceptors-debug"
    publish(redis_url, prefix)
    with GatewayProcess(redis_url, prefix, "--log-level", "DEBUG") as gateway:
        yield gateway


def call_with(
    gateway: GatewayProcess, metadata: tuple[tuple[str, str], ...]
) -> tuple[pb.CheckClaimResponse, str | None]:
    with grpc.insecure_channel(gateway.address) as channel:
        stub = pb_grpc.EligibilityGatewayStub(channel)
        response, call = stub.CheckClaim.with_call(
            hospital_claim("RID-1", line(ACTIVE, "1")), timeout=5, metadata=metadata
        )
        rid = request_id_in(call.trailing_metadata())
    return response, rid


def request_id_in(metadata: object) -> str | None:
    for key, value in metadata or ():  # type: ignore[attr-defined]
        if key == "x-request-id" and isinstance(value, str):
            return value
    return None


def log_lines(gateway: GatewayProcess) -> list[dict[str, object]]:
    text = gateway.log_path.read_text(errors="replace")
    return [orjson.loads(raw) for raw in text.splitlines() if raw.startswith("{")]


def test_the_client_request_id_comes_back_and_is_in_the_log(
    debug_gateway: GatewayProcess,
) -> None:
    _, rid = call_with(debug_gateway, (("x-request-id", "his-7f3a.42"),))
    assert rid == "his-7f3a.42"
    wait_until(
        lambda: any(
            doc.get("request_id") == "his-7f3a.42" and doc.get("method") == "CheckClaim"
            for doc in log_lines(debug_gateway)
        ),
        "the RPC's log line",
    )
    [doc] = [d for d in log_lines(debug_gateway) if d.get("request_id") == "his-7f3a.42"]
    assert doc["code"] == "OK" and doc["msg"] == "rpc"


@pytest.mark.parametrize(
    "metadata",
    [(), (("x-request-id", "has spaces"),), (("x-request-id", "x" * 65),)],
    ids=["none", "bad-characters", "too-long"],
)
def test_a_request_id_is_made_when_none_or_a_bad_one_is_sent(
    debug_gateway: GatewayProcess, metadata: tuple[tuple[str, str], ...]
) -> None:
    _, rid = call_with(debug_gateway, metadata)
    assert rid is not None and re.fullmatch(r"[0-9a-f]{16}", rid)


def test_errors_carry_the_request_id_too(debug_gateway: GatewayProcess) -> None:
    with grpc.insecure_channel(debug_gateway.address) as channel:
        stub = pb_grpc.EligibilityGatewayStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.CheckClaim(hospital_claim("bad"), timeout=5, metadata=(("x-request-id", "e-1"),))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert request_id_in(info.value.trailing_metadata()) == "e-1"  # type: ignore[attr-defined]


def test_no_claim_contents_in_the_log_at_info_level(redis_url: str, prefix: str) -> None:
    publish(redis_url, prefix)
    with GatewayProcess(redis_url, prefix) as gateway:
        with grpc.insecure_channel(gateway.address) as channel:
            stub = pb_grpc.EligibilityGatewayStub(channel)
            stub.CheckClaim(
                hospital_claim(
                    "SECRET-CLAIM-9",
                    line(SUSPENDED, "1", 4242, emergency=True),
                    line("D1101-BAD-CODE", "2"),
                ),
                timeout=5,
            )
            with pytest.raises(grpc.RpcError):
                stub.CheckClaim(hospital_claim("SECRET-CLAIM-10"), timeout=5)
        assert gateway.stop() == 0
        text = gateway.log_path.read_text()
    assert "index loaded" in text or "serving" in text  # the log is there
    for content in (SUSPENDED, "D1101-BAD-CODE", "SECRET-CLAIM", "4242"):
        assert content not in text


@pytest.fixture(scope="module")
def metered_gateway(redis_url: str) -> Iterator[tuple[GatewayProcess, int]]:
    prefix = "interceptors-codes"
    publish(redis_url, prefix)
    metrics_port = free_port()
    args = ("--metrics-port", str(metrics_port), "--max-message-bytes", "1024")
    with GatewayProcess(redis_url, prefix, *args) as gateway:
        yield gateway, metrics_port


def rpcs(metrics_port: int, method: str, code: str) -> float:
    found = sample(
        scrape(metrics_port),
        "eligibility_rpcs_total",
        service="eligibility.v1.EligibilityGateway",
        method=method,
        code=code,
    )
    return found or 0.0


def test_a_stream_the_client_cancels_is_counted_cancelled_not_ok(
    metered_gateway: tuple[GatewayProcess, int],
) -> None:
    gateway, metrics_port = metered_gateway
    requests: queue.Queue[pb.CheckClaimRequest | None] = queue.Queue()

    def feed() -> Iterator[pb.CheckClaimRequest]:
        while (request := requests.get()) is not None:
            yield request

    ok_before = rpcs(metrics_port, "CheckClaims", "OK")
    with grpc.insecure_channel(gateway.address) as channel:
        stub = pb_grpc.EligibilityGatewayStub(channel)
        responses = stub.CheckClaims(feed(), timeout=10)
        requests.put(hospital_claim("S-1", line(ACTIVE, "1")))
        assert next(iter(responses)).claim_id == "S-1"
        # The server now waits for the next request: cancelled there, the
        # stream used to end for it like a normal close, and counted OK.
        responses.cancel()  # type: ignore[no-untyped-call]
        requests.put(None)
        wait_until(lambda: rpcs(metrics_port, "CheckClaims", "CANCELLED") == 1, "CANCELLED")
    assert rpcs(metrics_port, "CheckClaims", "OK") == ok_before


def test_an_answer_too_large_to_send_is_counted_resource_exhausted(
    metered_gateway: tuple[GatewayProcess, int],
) -> None:
    gateway, metrics_port = metered_gateway
    # 200 empty lines: a ~450-byte request, a ~1,600-byte answer (each line's
    # decision, reason and status) over --max-message-bytes 1024.
    claim = hospital_claim("BIG", *[pb.ClaimLine() for _ in range(200)])
    assert claim.ByteSize() < 1024
    ok_before = rpcs(metrics_port, "CheckClaim", "OK")
    with grpc.insecure_channel(gateway.address) as channel:
        stub = pb_grpc.EligibilityGatewayStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.CheckClaim(claim, timeout=5)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than the maximum message size (1024 bytes" in (info.value.details() or "")
    wait_until(
        lambda: rpcs(metrics_port, "CheckClaim", "RESOURCE_EXHAUSTED") == 1, "RESOURCE_EXHAUSTED"
    )
    assert rpcs(metrics_port, "CheckClaim", "OK") == ok_before
