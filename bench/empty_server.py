"""The reference for the throughput harness: a grpc.aio server on the same
proto and the same server options as the gateway whose handlers do nothing
(an empty response per request, unary and streaming).

    python -m bench.empty_server --port 50099
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc

from proto.eligibility.v1 import eligibility_pb2 as pb
from proto.eligibility.v1 import eligibility_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]
_EMPTY = pb.CheckClaimResponse()


class EmptyServicer(pb_grpc.EligibilityGatewayServicer):
    async def CheckClaim(
        self, request: pb.CheckClaimRequest, context: Context
    ) -> pb.CheckClaimResponse:
        return _EMPTY

    async def CheckClaims(
        self, request_iterator: AsyncIterator[pb.CheckClaimRequest], context: Context
    ) -> AsyncIterator[pb.CheckClaimResponse]:
        async for _ in request_iterator:
            yield _EMPTY

    async def GetPractitionerStatus(
        self, request: pb.GetPractitionerStatusRequest, context: Context
    ) -> pb.GetPractitionerStatusResponse:
        return pb.GetPractitionerStatusResponse()


async def serve(host: str, port: int) -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
        ]
    )
    pb_grpc.add_EligibilityGatewayServicer_to_server(EmptyServicer(), server)
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    await server.start()
    print(f"empty server on {host}:{port}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description="empty-handler reference server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
