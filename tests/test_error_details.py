"""Structured error details: a refused request carries a google.rpc.BadRequest
field violation beside the text (gRPC's richer error model), decoded here the
way a client does, against the real gateway."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2  # type: ignore[import-untyped]  # no py.typed
from grpc_status import rpc_status

from contract.errors import IndexNotLoadedError, PermissionDeniedError
from gateway.servicer import rpc_status_for
from proto.eligibility.v1 import eligibility_pb2 as pb
from proto.eligibility.v1 import eligibility_pb2_grpc as pb_grpc
from tests import ops_data as data
from tests.gateway_process import GatewayProcess


def field_violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    """The BadRequest field violations in ``error``'s status details."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]  # an RpcError is a Call
    assert status is not None, "no grpc-status-details-bin trailer"
    assert status.code == error.code().value[0]  # type: ignore[attr-defined]
    assert status.message == error.details()  # type: ignore[attr-defined]
    violations = []
    for detail in status.details:
        assert detail.Is(error_details_pb2.BadRequest.DESCRIPTOR)
        bad_request = error_details_pb2.BadRequest()
        detail.Unpack(bad_request)
        violations += [(v.field, v.description) for v in bad_request.field_violations]
    return violations


@pytest.fixture(scope="module")
def stub(redis_url: str) -> Iterator[pb_grpc.EligibilityGatewayStub]:
    prefix = "error-details"
    data.publish(redis_url, prefix)
    with (
        GatewayProcess(redis_url, prefix) as gateway,
        grpc.insecure_channel(gateway.address) as channel,
    ):
        yield pb_grpc.EligibilityGatewayStub(channel)


@pytest.mark.parametrize(
    ("claim", "message", "field"),
    [
        (
            data.hospital_claim("", data.line(data.ACTIVE, "1")),
            "claim_id: is required",
            "claim_id",
        ),
        (data.hospital_claim("C-1"), "lines: a claim needs at least one line", "lines"),
        (
            data.hospital_claim("C-2", data.line(data.ACTIVE, "1", amount_fen=-5)),
            "lines[0].amount_fen: -5 is negative",
            "lines[0].amount_fen",
        ),
    ],
    ids=["claim_id", "lines", "amount_fen"],
)
def test_invalid_argument_carries_a_field_violation(
    stub: pb_grpc.EligibilityGatewayStub, claim: pb.CheckClaimRequest, message: str, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.CheckClaim(claim, timeout=5)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert error.details() == message  # type: ignore[attr-defined]  # the text as before
    ((violated, description),) = field_violations(error)
    assert violated == field
    assert message == f"{field}: {description}"


def test_stream_error_names_the_position_in_text_and_the_field_in_details(
    stub: pb_grpc.EligibilityGatewayStub,
) -> None:
    claims = [
        data.hospital_claim("S-1", data.line(data.ACTIVE, "1")),
        data.hospital_claim("", data.line(data.ACTIVE, "1")),
    ]
    responses = iter(stub.CheckClaims(iter(claims), timeout=5))
    assert next(responses).claim_id == "S-1"
    with pytest.raises(grpc.RpcError) as caught:
        next(responses)
    error = caught.value
    assert error.details() == "request 1 (claim_id ''): claim_id: is required"  # type: ignore[attr-defined]
    assert field_violations(error) == [("claim_id", "is required")]


def test_practitioner_status_bad_date(stub: pb_grpc.EligibilityGatewayStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetPractitionerStatus(
            pb.GetPractitionerStatusRequest(practitioner_code=data.ACTIVE, date=20260231),
            timeout=5,
        )
    ((field, _),) = field_violations(caught.value)
    assert field == "date"


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (IndexNotLoadedError(), grpc.StatusCode.UNAVAILABLE),
        (PermissionDeniedError("institution_code: not yours"), grpc.StatusCode.PERMISSION_DENIED),
    ],
)
def test_other_errors_carry_the_code_and_text_only(
    exc: IndexNotLoadedError | PermissionDeniedError, code: grpc.StatusCode
) -> None:
    status = rpc_status_for(exc, str(exc))
    assert status.code == code  # type: ignore[attr-defined]
    assert status.details == str(exc)  # type: ignore[attr-defined]
    assert status.trailing_metadata[0][0] == "grpc-status-details-bin"  # type: ignore[attr-defined]
