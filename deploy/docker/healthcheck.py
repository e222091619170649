"""Container health check: one gRPC health ``Check`` against the local gateway.

Docker's ``HEALTHCHECK`` (and, where the gRPC port needs a client certificate,
a Kubernetes ``exec`` probe) runs this; it exits 0 when the answer is SERVING
and 1 otherwise (NOT_SERVING, no answer within the timeout, refused).

    python /app/healthcheck.py                      # overall status, port $ELIG_PORT
    python /app/healthcheck.py --service eligibility.v1.IndexFreshness

Plaintext unless ``--ca-file`` is given (``ELIG_HEALTHCHECK_CA_FILE``): then TLS,
verified against that CA, with ``--cert-file``/``--key-file``
(``ELIG_HEALTHCHECK_CERT_FILE``/``_KEY_FILE``) as the client certificate when
the gateway requires one (mutual TLS), and ``--server-name`` when the
gateway's certificate does not name ``localhost``.
Only grpcio and grpcio-health-checking, both dependencies of the gateway.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(description="gRPC health check of the local gateway")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(env("ELIG_PORT", "50051")))
    parser.add_argument("--service", default="", help="health entry ('' = overall)")
    parser.add_argument("--timeout-s", type=float, default=3.0)
    parser.add_argument("--ca-file", default=env("ELIG_HEALTHCHECK_CA_FILE"))
    parser.add_argument("--cert-file", default=env("ELIG_HEALTHCHECK_CERT_FILE"))
    parser.add_argument("--key-file", default=env("ELIG_HEALTHCHECK_KEY_FILE"))
    parser.add_argument("--server-name", default=env("ELIG_HEALTHCHECK_SERVER_NAME"))
    return parser


def _channel(args: argparse.Namespace) -> grpc.Channel:
    target = f"{args.host}:{args.port}"
    if args.ca_file is None:
        return grpc.insecure_channel(target)

    def read(path: str | None) -> bytes | None:
        if path is None:
            return None
        with open(path, "rb") as f:
            return f.read()

    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(args.ca_file),
        private_key=read(args.key_file),
        certificate_chain=read(args.cert_file),
    )
    options = []
    if args.server_name:
        options.append(("grpc.ssl_target_name_override", args.server_name))
    return grpc.secure_channel(target, credentials, options=options)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _channel(args) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            answer = stub.Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout_s
            )
    except grpc.RpcError as exc:
        print(f"unhealthy: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    print(f"{args.service or '(overall)'}: {name}")
    return 0 if answer.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
