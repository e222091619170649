"""Limits and shutdown of the real gateway process: concurrent calls beyond
the maximum get RESOURCE_EXHAUSTED at once, and SIGTERM turns health
NOT_SERVING first, lets in-flight calls finish within the grace period and
cancels what is still open after it."""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from proto.eligibility.v1 import eligibility_pb2 as pb
from proto.eligibility.v1 import eligibility_pb2_grpc as pb_grpc
from tests.gateway_process import GatewayProcess
from tests.ops_data import ACTIVE, hospital_claim, line, publish


class OpenStream:
    """A CheckClaims stream whose requests the test sends one at a time."""

    def __init__(self, stub: pb_grpc.EligibilityGatewayStub, timeout_s: float = 30) -> None:
        self.requests: queue.Queue[pb.CheckClaimRequest | None] = queue.Queue()
        self.responses = stub.CheckClaims(self._feed(), timeout=timeout_s)

    def _feed(self) -> Iterator[pb.CheckClaimRequest]:
        while (request := self.requests.get()) is not None:
            yield request

    def ask(self, claim_id: str) -> pb.CheckClaimResponse:
        self.requests.put(hospital_claim(claim_id, line(ACTIVE, "1")))
        response: pb.CheckClaimResponse = next(iter(self.responses))
        return response

    def close(self) -> list[pb.CheckClaimResponse]:
        self.requests.put(None)
        return list(self.responses)


@pytest.fixture(scope="module")
def prefix_published(redis_url: str) -> str:
    prefix = "limits-e2e"
    publish(redis_url, prefix)
    return prefix


def test_calls_beyond_the_maximum_get_resource_exhausted_at_once(
    redis_url: str, prefix_published: str
) -> None:
    args = (redis_url, prefix_published, "--max-concurrent-rpcs", "2")
    with GatewayProcess(*args) as gateway, grpc.insecure_channel(gateway.address) as channel:
        stub = pb_grpc.EligibilityGatewayStub(channel)
        streams = [OpenStream(stub) for _ in range(2)]
        for i, stream in enumerate(streams):
            assert stream.ask(f"hold-{i}").claim_id == f"hold-{i}"
        claim = hospital_claim("over", line(ACTIVE, "1"))
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            stub.CheckClaim(claim, timeout=20)
        refused_after = time.monotonic() - started
        # Refused by the limit, not left to wait for its deadline.
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused_after
        for stream in streams:
            assert stream.close() == []
        deadline = time.monotonic() + 5
        while True:  # the server counts the closed streams down asynchronously
            try:
                assert stub.CheckClaim(claim, timeout=5).claim_id == "over"
                break
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert time.monotonic() < deadline
                time.sleep(0.05)


class HealthWatch:
    """The statuses a health Watch stream reports, collected by a thread."""

    def __init__(self, channel: grpc.Channel) -> None:
        stub = health_pb2_grpc.HealthStub(channel)
        self.call = stub.Watch(health_pb2.HealthCheckRequest(), timeout=30)
        self.seen: list[int] = []
        self.thread = threading.Thread(target=self._collect)
        self.thread.start()

    def _collect(self) -> None:
        try:
            for response in self.call:
                self.seen.append(int(response.status))
        except grpc.RpcError:
            pass

    def wait_for(self, status: int) -> None:
        deadline = time.monotonic() + 5
        while status not in self.seen:
            assert time.monotonic() < deadline, self.seen
            time.sleep(0.02)

    def cancel(self) -> None:
        self.call.cancel()
        self.thread.join(timeout=10)


def test_sigterm_goes_not_serving_then_lets_in_flight_calls_finish(
    redis_url: str, prefix_published: str
) -> None:
    gateway = GatewayProcess(redis_url, prefix_published, "--shutdown-grace-s", "20").start()
    try:
        assert gateway.proc is not None
        with grpc.insecure_channel(gateway.address) as channel:
            stub = pb_grpc.EligibilityGatewayStub(channel)
            stream = OpenStream(stub)
            assert stream.ask("before").claim_id == "before"
            watch = HealthWatch(channel)
            watch.wait_for(health_pb2.HealthCheckResponse.SERVING)

            gateway.proc.send_signal(signal.SIGTERM)
            watch.wait_for(health_pb2.HealthCheckResponse.NOT_SERVING)
            watch.cancel()
            # The call in flight is still answered during the grace period...
            assert stream.ask("during").claim_id == "during"
            assert gateway.proc.poll() is None
            # ... and ends normally when the client is done with it.
            assert stream.close() == []
        # Nothing is in flight any more: the process exits long before the grace ends.
        assert gateway.proc.wait(timeout=15) == 0
    finally:
        gateway.stop()


def test_calls_still_open_when_the_grace_period_ends_are_cancelled(
    redis_url: str, prefix_published: str
) -> None:
    gateway = GatewayProcess(redis_url, prefix_published, "--shutdown-grace-s", "0.5").start()
    try:
        assert gateway.proc is not None
        with grpc.insecure_channel(gateway.address) as channel:
            stream = OpenStream(pb_grpc.EligibilityGatewayStub(channel))
            assert stream.ask("open").claim_id == "open"
            gateway.proc.send_signal(signal.SIGTERM)
            assert gateway.proc.wait(timeout=15) == 0
            with pytest.raises(grpc.RpcError) as info:
                stream.ask("after")
            assert info.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
            stream.requests.put(None)
    finally:
        gateway.stop()
