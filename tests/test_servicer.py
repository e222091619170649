"""The servicer's proto <-> kernel path without a network, and the error table."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import pytest

from contract import errors
from contract.domain import Status
from contract.errors import IndexNotLoadedError, InvalidRequestError
from gateway.decide import Override, Policy
from gateway.index import IndexHolder
from gateway.servicer import STATUS_FOR_ERROR, EligibilityServicer, status_for
from proto.eligibility.v1 import eligibility_pb2 as pb
from tests.factory import Person, build_index

H1 = "H11010500001"
PEOPLE = [
    Person("D110105000001", [(H1, "2020-01-01", None)]),
    Person(
        "D110105000003",
        [(H1, "2020-01-01", None)],
        [("2025-06-01", Status.SUSPENDED, "2025-08-31"), ("2025-09-01", Status.ACTIVE, None)],
        [("2025-06-01", 9)],
    ),
]


class Recorded:
    def __init__(self) -> None:
        self.lines: list[tuple[str, int, int]] = []

    def record(
        self,
        request: pb.CheckClaimRequest,
        overrides: Sequence[Override],
        index_version: int,
    ) -> None:
        self.lines += [(request.lines[i].line_id, day, index_version) for i, day, _ in overrides]


@pytest.fixture
def overrides() -> Recorded:
    return Recorded()


@pytest.fixture
def servicer(overrides: Recorded) -> EligibilityServicer:
    holder = IndexHolder()
    holder.swap(build_index(PEOPLE, version=42))
    return EligibilityServicer(holder, Policy(), max_lines_per_claim=50, overrides=overrides)


def test_every_domain_error_is_mapped() -> None:
    classes = [
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.EligibilityError)
    ]
    mapped = {cls for cls, _ in STATUS_FOR_ERROR}
    assert set(classes) <= mapped
    assert status_for(InvalidRequestError("lines", "x")) == grpc.StatusCode.INVALID_ARGUMENT
    assert status_for(IndexNotLoadedError()) == grpc.StatusCode.UNAVAILABLE


def test_a_claim_is_decided_line_by_line_in_order(
    servicer: EligibilityServicer, overrides: Recorded
) -> None:
    response = servicer.check_claim(
        pb.CheckClaimRequest(
            claim_id="C-1",
            institution_code=H1,
            channel=pb.CHANNEL_HOSPITAL,
            service_date=20250701,
            lines=[
                pb.ClaimLine(line_id="a", prescriber_code="D110105000001"),
                pb.ClaimLine(line_id="b", prescriber_code="D110105000003"),
                pb.ClaimLine(line_id="c", prescriber_code="D110105000003", emergency=True),
                pb.ClaimLine(line_id="d", prescriber_code="D110105000003", service_date=20250901),
            ],
        )
    )
    assert response.claim_id == "C-1"
    assert response.index_version == 42
    assert response.rejected_lines == 1
    got = [
        (ld.line_id, ld.decision, ld.reason, ld.status, ld.status_until) for ld in response.lines
    ]
    assert got == [
        ("a", pb.DECISION_PAY, pb.REASON_OK, pb.STATUS_ACTIVE, 0),
        ("b", pb.DECISION_REJECT, pb.REASON_SUSPENDED, pb.STATUS_SUSPENDED, 20250831),
        (
            "c",
            pb.DECISION_PAY_EMERGENCY_OVERRIDE,
            pb.REASON_SUSPENDED,
            pb.STATUS_SUSPENDED,
            20250831,
        ),
        ("d", pb.DECISION_PAY, pb.REASON_OK, pb.STATUS_ACTIVE, 0),
    ]
    assert [line_id for line_id, _, _ in overrides.lines] == ["c"]
    assert overrides.lines[0][2] == 42


def test_no_index_means_unavailable() -> None:
    servicer = EligibilityServicer(
        IndexHolder(), Policy(), max_lines_per_claim=5, overrides=Recorded()
    )
    with pytest.raises(IndexNotLoadedError):
        servicer.check_claim(pb.CheckClaimRequest(claim_id="x"))


def test_practitioner_status_on_a_date(servicer: EligibilityServicer) -> None:
    response = servicer.practitioner_status(
        pb.GetPractitionerStatusRequest(practitioner_code="D110105000003", date=20250715)
    )
    assert response.status == pb.STATUS_SUSPENDED
    assert response.status_until == 20250831
    assert list(response.institution_codes) == [H1]
    assert (response.points, response.points_known) == (9, True)
    assert response.index_version == 42
    unknown = servicer.practitioner_status(
        pb.GetPractitionerStatusRequest(practitioner_code="D999999999999", date=20250715)
    )
    assert unknown.status == pb.STATUS_NOT_REGISTERED
    assert list(unknown.institution_codes) == []


@pytest.mark.parametrize(
    ("code", "date", "field"),
    [("D1", 20250101, "practitioner_code"), ("D110105000001", 20251399, "date")],
)
def test_practitioner_status_refuses_bad_input(
    servicer: EligibilityServicer, code: str, date: int, field: str
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        servicer.practitioner_status(
            pb.GetPractitionerStatusRequest(practitioner_code=code, date=date)
        )
    assert info.value.field == field
