"""Limits and shutdown of the real gateway process: concurrent calls beyond
the maximum get RESOURCE_EXHAUSTED at once, and SIGTERM turns health
NOT_SERVING first, lets in-flight calls finish within the grace period and
cancels what is still open after it."""

from __future__ import annotations

import asyncio
import queue
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.stream_pressure import Stream, measure, open_check_claims
from gateway.ops.interceptors import WrappedServer
from gateway.ops.limits import LimitsWrapper
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


def test_streams_beyond_the_maximum_get_resource_exhausted_at_once(
    redis_url: str, prefix_published: str
) -> None:
    args = (redis_url, prefix_published, "--max-open-streams", "2", "--max-concurrent-rpcs", "1")
    with GatewayProcess(*args) as gateway, grpc.insecure_channel(gateway.address) as channel:
        stub = pb_grpc.EligibilityGatewayStub(channel)
        streams = [OpenStream(stub) for _ in range(2)]
        for i, stream in enumerate(streams):
            assert stream.ask(f"hold-{i}").claim_id == f"hold-{i}"
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            OpenStream(stub, timeout_s=20).ask("over")
        refused_after = time.monotonic() - started
        # Refused by the limit, not left to wait for its deadline.
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused_after
        assert "--max-open-streams 2" in (info.value.details() or "")
        # The open streams take no unary slot: a claim and a health check still pass.
        claim = hospital_claim("unary", line(ACTIVE, "1"))
        assert stub.CheckClaim(claim, timeout=5).claim_id == "unary"
        assert health_of(channel) == health_pb2.HealthCheckResponse.SERVING
        for stream in streams:
            assert stream.close() == []
        deadline = time.monotonic() + 5
        while True:  # the server counts the closed streams down asynchronously
            again = OpenStream(stub, timeout_s=5)
            try:
                assert again.ask("again").claim_id == "again"
                assert again.close() == []
                break
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert time.monotonic() < deadline
                again.requests.put(None)
                time.sleep(0.05)


def health_of(channel: grpc.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return int(stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status)


async def hold_streams(channel: grpc.aio.Channel, n: int) -> list[Stream]:
    """``n`` CheckClaims streams, each answered once and then left open, idle."""
    calls = [open_check_claims(channel, timeout_s=60) for _ in range(n)]

    async def first(i: int, call: Stream) -> None:
        await call.write(hospital_claim(f"idle-{i}", line(ACTIVE, "1")))
        response = await call.read()
        assert isinstance(response, pb.CheckClaimResponse)
        assert response.claim_id == f"idle-{i}"

    await asyncio.gather(*(first(i, call) for i, call in enumerate(calls)))
    return calls


@pytest.mark.slow
def test_1000_idle_streams_leave_health_checks_and_unary_calls_answered(
    redis_url: str, prefix_published: str
) -> None:
    # Issue 11: with one global limit, these streams took every slot and the
    # health check itself was refused (a probe would restart a healthy pod).
    args = ("--max-open-streams", "1000", "--max-concurrent-rpcs", "1000")
    with GatewayProcess(redis_url, prefix_published, *args) as gateway:

        async def scenario() -> None:
            async with (
                grpc.aio.insecure_channel(gateway.address) as held,
                grpc.aio.insecure_channel(gateway.address) as channel,
            ):
                calls = await hold_streams(held, 1000)
                stub = pb_grpc.EligibilityGatewayStub(channel)
                over = open_check_claims(channel, timeout_s=10)
                with pytest.raises(grpc.aio.AioRpcError) as info:  # refused at once
                    await over.write(hospital_claim("over", line(ACTIVE, "1")))
                    await over.read()
                assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                health = health_pb2_grpc.HealthStub(channel)
                for i in range(20):
                    checked = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    assert checked.status == health_pb2.HealthCheckResponse.SERVING
                    claim = hospital_claim(f"unary-{i}", line(ACTIVE, "1"))
                    assert (await stub.CheckClaim(claim, timeout=2)).claim_id == f"unary-{i}"
                for call in calls:
                    call.cancel()

        asyncio.run(scenario())


async def slow(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    await asyncio.sleep(float(request.decode()))
    return b"x" * 2000


@pytest.mark.slow
def test_unary_calls_beyond_the_maximum_are_refused_and_health_checks_never() -> None:
    async def scenario() -> None:
        limits = LimitsWrapper(max_concurrent_rpcs=2, max_open_streams=1, max_response_bytes=1000)
        server = grpc.aio.server()
        registry = WrappedServer(server, (limits,))  # as gateway.server registers handlers
        handlers = {"Slow": grpc.unary_unary_rpc_method_handler(slow)}
        registry.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", handlers),))
        health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, registry)  # type: ignore[arg-type]
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call_slow = channel.unary_unary(
                    "/t.T/Slow", request_serializer=None, response_deserializer=None
                )
                held = [asyncio.ensure_future(call_slow(b"1.5", timeout=10)) for _ in range(2)]
                await asyncio.sleep(0.5)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call_slow(b"0", timeout=5)
                assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "--max-concurrent-rpcs 2" in (info.value.details() or "")
                checks = health_pb2_grpc.HealthStub(channel)
                for _ in range(10):  # not limited, even with every unary slot taken
                    await checks.Check(health_pb2.HealthCheckRequest(), timeout=2)
                # Answers larger than the message limit are refused naming the sizes
                # (left to gRPC, the metrics counted the failed send as OK).
                for refused in await asyncio.gather(*held, return_exceptions=True):
                    assert isinstance(refused, grpc.aio.AioRpcError)
                    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    assert "response of 2000 bytes" in (refused.details() or "")
                assert limits.unary.in_use == 0
        finally:
            await server.stop(0)

    asyncio.run(scenario())


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


# Per stream whose client sends and never reads: the request window
# (--stream-window-bytes, 64 KiB) plus a claim in decoding and an answer in
# sending. Measured 0.23 MB a stream with 250 streams (bench/stream_pressure.py,
# bench/RESULTS.md); before, gRPC's BDP-grown windows let each hold ~4-16 MB.
MAX_MB_PER_NON_READING_STREAM = 1.0


@pytest.mark.slow
def test_streams_that_never_read_hold_bounded_memory(redis_url: str, prefix_published: str) -> None:
    streams = 50
    with GatewayProcess(redis_url, prefix_published) as gateway:
        pressure = measure(gateway, streams=streams, lines=1000, seconds=6, probe_calls=5)
    assert pressure.per_stream_mb < MAX_MB_PER_NON_READING_STREAM, pressure
