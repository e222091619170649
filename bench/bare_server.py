"""The gateway's servicer alone on a grpc.aio server, for the throughput
harness's breakdown: the real ``EligibilityServicer`` over the index the
gateway's own reader loads from Redis, but no interceptor, no metrics, no
health or reflection service and no background tasks. Comparing it with the
empty-handler server and with ``python -m gateway`` separates the decision
path's cost from the cost of everything wrapped around it.

    python -m bench.bare_server --redis-url redis://127.0.0.1:PORT/0 --prefix bench --port P
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Sequence

import grpc
import redis.asyncio as aioredis

from contract import reads
from contract.snapshot import Keys
from gateway.decide import Override, Policy
from gateway.feed import load_snapshot
from gateway.index import IndexHolder
from gateway.servicer import EligibilityServicer, add_servicer_to_server
from proto.eligibility.v1 import eligibility_pb2 as pb


class DiscardOverrides:
    """An override sink that keeps nothing (the audit is off the decision path)."""

    def record(
        self,
        request: pb.CheckClaimRequest,
        overrides: Sequence[Override],
        index_version: int,
    ) -> None:
        return None


async def serve(redis_url: str, prefix: str, host: str, port: int) -> None:
    client = aioredis.Redis.from_url(redis_url)
    keys = Keys(prefix)
    holder = IndexHolder()
    version = await reads.run_async(client, reads.current_version_plan(keys))
    assert version is not None, f"no snapshot published under {prefix!r}"
    holder.swap(await load_snapshot(client, keys, version))
    await client.aclose()
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
        ]
    )
    servicer = EligibilityServicer(
        holder, Policy(), max_lines_per_claim=1000, overrides=DiscardOverrides()
    )
    add_servicer_to_server(servicer, server)
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    await server.start()
    print(f"bare servicer on {host}:{port}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description="the servicer alone on a grpc.aio server")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", default="bench")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.redis_url, args.prefix, args.host, args.port))


if __name__ == "__main__":
    main()
