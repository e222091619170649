"""Locust load test of the gateway over gRPC, with the two traffic shapes:
pharmacy POS baskets (1-5 lines, latency-sensitive, many users) and
hospital settlements (20-200 lines). The gRPC user follows locust's
documentation ("Testing other systems: gRPC"): grpc patched for gevent, and a
client interceptor that fires locust's ``request`` event for every call; here
the interceptor is grpc's own ``UnaryUnaryClientInterceptor``, so no extra
package is needed.

Serve the national data set, then run headless with CSV and HTML reports::

    python -m bench.serve_national --port 50051 &
    locust -f bench/locustfile.py --headless -u 50 -r 10 -t 60s \
        --host 127.0.0.1:50051 --csv bench/locust --html bench/locust.html

``BENCH_PRACTITIONERS`` (default 15 million) must match the served data set:
the claims are drawn from the same deterministic generator.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent  # type: ignore[import-not-found]
from locust import User, between, events, task

# locust puts this file's directory on sys.path, not the repository's: the
# bench package (not installed with the project) is imported from there.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.national import NATIONAL_PRACTITIONERS, ClaimGenerator, national_data
from proto.eligibility.v1 import eligibility_pb2 as pb
from proto.eligibility.v1 import eligibility_pb2_grpc as pb_grpc

# Patch grpc so that it cooperates with gevent, as locust's documentation says.
grpc_gevent.init_gevent()

CLAIMS_PER_SHAPE = 2000
_claims: dict[str, list[pb.CheckClaimRequest]] = {}


@events.init.add_listener  # type: ignore[untyped-decorator]
def make_claims(environment: Any, **_kwargs: Any) -> None:
    """Build the claim pools once per locust process, before any user starts."""
    n = int(os.environ.get("BENCH_PRACTITIONERS", NATIONAL_PRACTITIONERS))
    generator = ClaimGenerator(national_data(n), seed=23)
    _claims["pharmacy"] = generator.claims("pharmacy", CLAIMS_PER_SHAPE)
    _claims["hospital"] = generator.claims("hospital", CLAIMS_PER_SHAPE // 4)


class LocustInterceptor(grpc.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """Reports every unary call to locust's statistics, named by RPC method and
    traffic shape (so baskets and settlements get separate rows)."""

    def __init__(self, environment: Any, shape: str) -> None:
        self.env = environment
        self.shape = shape

    def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        started = time.perf_counter()
        exception: BaseException | None = None
        response_length = 0
        call = continuation(client_call_details, request)
        try:
            response = call.result()
            response_length = response.ByteSize()
        except grpc.RpcError as exc:
            exception = exc
        self.env.events.request.fire(
            request_type="grpc",
            name=f"{client_call_details.method} [{self.shape}]",
            response_time=(time.perf_counter() - started) * 1000,
            response_length=response_length,
            response=None,
            context=None,
            exception=exception,
        )
        return call


class GrpcUser(User):
    """A locust user with a gRPC stub on an intercepted channel (``host`` = ip:port)."""

    abstract = True
    shape = "claims"

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        if not self.host:
            raise ValueError("give the gateway as --host ip:port")
        channel = grpc.insecure_channel(self.host)
        self.channel = grpc.intercept_channel(channel, LocustInterceptor(environment, self.shape))
        self.stub = pb_grpc.EligibilityGatewayStub(self.channel)

    def on_stop(self) -> None:
        self.channel.close()


def _cycle(shape: str) -> Iterator[pb.CheckClaimRequest]:
    return itertools.cycle(_claims[shape])


class PharmacyPos(GrpcUser):
    """A pharmacy till: a 1-5-line basket every 50-200 ms."""

    weight = 4
    shape = "pharmacy basket"
    wait_time = between(0.05, 0.2)

    def on_start(self) -> None:
        self.baskets = _cycle("pharmacy")

    @task
    def check_basket(self) -> None:
        self.stub.CheckClaim(next(self.baskets), timeout=5)


class HospitalSettlement(GrpcUser):
    """A hospital settlement system: a 20-200-line settlement every 0.2-1 s."""

    weight = 1
    shape = "hospital settlement"
    wait_time = between(0.2, 1.0)

    def on_start(self) -> None:
        self.settlements = _cycle("hospital")

    @task
    def check_settlement(self) -> None:
        self.stub.CheckClaim(next(self.settlements), timeout=10)
