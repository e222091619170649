"""Send one hospital claim to the eligibility gateway and print its decisions.

    .venv/bin/python examples/python/check_claim.py --address localhost:50051

The claim names the sample data set's fixed practitioners (``make run`` loads
it; see loader/sample.py, or the ``fixture.json`` it writes beside its files)
and is dated today in China Standard Time. The channel uses the published
service config (../service_config.json): retries on UNAVAILABLE, a deadline,
round_robin over every address the name resolves to.

The stubs come from this project's package; a vendor generates their own:

    python -m grpc_tools.protoc -Iproto --python_out=. --grpc_python_out=. \\
        proto/eligibility/v1/eligibility.proto
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import grpc
from google.rpc import error_details_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status

from proto.eligibility.v1 import eligibility_pb2 as pb
from proto.eligibility.v1 import eligibility_pb2_grpc as pb_grpc

SERVICE_CONFIG = Path(__file__).resolve().parent.parent / "service_config.json"
CHINA_STANDARD_TIME = dt.timezone(dt.timedelta(hours=8))

# The sample data set's fixed codes (loader/sample.py: SampleFixture).
HOSPITAL = "H11010500001"
ACTIVE_DOCTOR = "D110105000001"
SUSPENDED_DOCTOR = "D110105000003"


def today_yyyymmdd() -> int:
    today = dt.datetime.now(CHINA_STANDARD_TIME).date()
    return today.year * 10000 + today.month * 100 + today.day


def sample_claim(claim_id: str) -> pb.CheckClaimRequest:
    """A hospital claim: an active doctor, and a suspended one twice (once as emergency care)."""
    return pb.CheckClaimRequest(
        claim_id=claim_id,
        institution_code=HOSPITAL,
        channel=pb.CHANNEL_HOSPITAL,
        service_date=today_yyyymmdd(),
        lines=[
            pb.ClaimLine(line_id="1", prescriber_code=ACTIVE_DOCTOR, amount_fen=12800),
            pb.ClaimLine(line_id="2", prescriber_code=SUSPENDED_DOCTOR, amount_fen=23000),
            pb.ClaimLine(
                line_id="3", prescriber_code=SUSPENDED_DOCTOR, emergency=True, amount_fen=98000
            ),
        ],
    )


def print_error(error: grpc.RpcError) -> None:
    """The status code, its text, and the fields a BadRequest detail names."""
    print(f"{error.code().name}: {error.details()}", file=sys.stderr)  # type: ignore[attr-defined]
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            for violation in bad_request.field_violations:
                print(f"  field {violation.field}: {violation.description}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="localhost:50051", help="host:port of the gateway")
    parser.add_argument("--claim-id", default="EXAMPLE-PY-1")
    parser.add_argument("--deadline-s", type=float, default=5.0, help="hospital: 5, POS: 1")
    args = parser.parse_args()
    options = [
        ("grpc.service_config", SERVICE_CONFIG.read_text()),
        ("grpc.enable_retries", 1),
    ]
    request = sample_claim(args.claim_id)
    with grpc.insecure_channel(args.address, options=options) as channel:
        stub = pb_grpc.EligibilityGatewayStub(channel)
        try:
            response = stub.CheckClaim(request, timeout=args.deadline_s)
        except grpc.RpcError as error:
            print_error(error)
            return 1
    print(
        json.dumps(
            {
                "claim_id": response.claim_id,
                "service_date": request.service_date,
                "index_version": response.index_version,
                "rejected_lines": response.rejected_lines,
            }
        )
    )
    for line in response.lines:
        until = f" until {line.status_until}" if line.status_until else ""
        print(
            f"line {line.line_id}: {pb.Decision.Name(line.decision)} "
            f"{pb.Reason.Name(line.reason)} {pb.PractitionerStatus.Name(line.status)}{until}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
