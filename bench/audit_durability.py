"""Override audit durability: a real gateway (``python -m gateway``) answers
emergency overrides from several client threads and is killed with SIGKILL
in the middle, with Redis up ("under load") or stopped ("redis outage");
restarted on the same spool with Redis back, every override a client was
answered PAY_EMERGENCY_OVERRIDE for must be in the audit stream, once.

    .venv/bin/python -m bench.audit_durability [--seconds 3] [--threads 8]

Prints one line per scenario: answered overrides, records found, lost,
extra (decided but unanswered when killed), stream entries, chain verified.
"""

from __future__ import annotations

import argparse
import signal
import tempfile
import threading
import time
from pathlib import Path

import grpc
import redis

from contract.snapshot import Keys
from gateway.ops.audit import read_overrides, verify_chains
from gateway.ops.redis_process import RedisProcess
from proto.eligibility.v1 import eligibility_pb2 as pb
from proto.eligibility.v1 import eligibility_pb2_grpc as pb_grpc
from tests.gateway_process import GatewayProcess
from tests.ops_data import SUSPENDED, hospital_claim, line, publish


def _load(address: str, seconds: float, threads: int, paid: set[tuple[str, str]]) -> None:
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def client(k: int) -> None:
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.EligibilityGatewayStub(channel)
            i = 0
            while time.monotonic() < stop:
                i += 1
                request = hospital_claim(
                    f"T{k}-{i}",
                    line(SUSPENDED, "a", emergency=True),
                    line(SUSPENDED, "b", emergency=True),
                )
                try:
                    response = stub.CheckClaim(request, timeout=5)
                except grpc.RpcError:
                    return  # killed: this call was never answered
                with lock:
                    paid.update(
                        (response.claim_id, d.line_id)
                        for d in response.lines
                        if d.decision == pb.DECISION_PAY_EMERGENCY_OVERRIDE
                    )

    workers = [threading.Thread(target=client, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def scenario(name: str, outage: bool, seconds: float, threads: int) -> str:
    server = RedisProcess().start()
    again = RedisProcess(port=server.port)
    spool = Path(tempfile.mkdtemp(prefix="audit-durability-"))
    prefix = f"dur-{name}"
    args = ("--audit-spool-dir", str(spool))
    try:
        publish(server.url, prefix)
        gateway = GatewayProcess(server.url, prefix, *args).start()
        paid: set[tuple[str, str]] = set()
        if outage:
            server.stop()
        loader = threading.Thread(target=_load, args=(gateway.address, seconds + 5, threads, paid))
        loader.start()
        time.sleep(seconds)
        assert gateway.proc is not None
        gateway.proc.send_signal(signal.SIGKILL)  # in the middle of the load
        gateway.proc.wait()
        loader.join()
        gateway.stop()
        if outage:
            again.start()
            publish(again.url, prefix)
            url = again.url
        else:
            url = server.url
        restarted = GatewayProcess(url, prefix, *args).start()
        client = redis.Redis.from_url(url)
        key = Keys(prefix).overrides
        deadline = time.monotonic() + 30
        found: set[tuple[str, str]] = set()
        while time.monotonic() < deadline:
            found = {(r.get("claim_id"), r.get("line_id")) for r in read_overrides(client, key)}
            if paid <= found:
                break
            time.sleep(0.2)
        entries = client.xlen(key)
        problems = verify_chains(client, key).problems
        restarted.stop()
        client.close()
        return (
            f"{name}: answered overrides {len(paid)}, records {len(found)}, "
            f"lost {len(paid - found)}, extra {len(found - paid)}, stream entries {entries}, "
            f"chain {problems or 'verified'}"
        )
    finally:
        again.cleanup()
        server.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="load before the kill")
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    print(scenario("kill-9-under-load", False, args.seconds, args.threads), flush=True)
    print(scenario("kill-9-during-redis-outage", True, args.seconds, args.threads), flush=True)


if __name__ == "__main__":
    main()
