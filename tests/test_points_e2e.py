"""End to end, the points engine's terminations (SPEC §7): the loader CLI
derives statuses from a scoring ledger and publishes them to a real
redis-server, the real gateway (``python -m gateway``) loads them, and the
test asks it over gRPC.

A termination ends every registration that began before it, even one the
registry leaves open; re-registering at another institution after the bar
makes the practitioner payable again there only."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from contract.days import add_years, date_to_day, day_to_date, today_cst
from loader.cli import main as loader_main
from proto.eligibility.v1 import eligibility_pb2 as pb
from proto.eligibility.v1 import eligibility_pb2_grpc as pb_grpc
from tests.gateway_process import GatewayProcess

TODAY = today_cst()
DATE = TODAY.year * 10000 + TODAY.month * 100 + TODAY.day
OLD_HOSPITAL = "H11010500001"
NEW_HOSPITAL = "H11010500002"
DOCTOR = "D110105000001"  # terminated, then re-registered at NEW_HOSPITAL
COLLEAGUE = "D110105000002"  # never scored, registered at OLD_HOSPITAL

# Two cases of 6 points on one day: 12 by accumulation (累计记满), a 1-year bar.
TERMINATED_ON = TODAY - dt.timedelta(days=400)
BAR_END = day_to_date(add_years(date_to_day(TERMINATED_ON), 1))  # first day allowed again
REREGISTERED_ON = BAR_END + dt.timedelta(days=10)


def write_inputs(out: Path) -> tuple[Path, Path]:
    registry = out / "registry.csv"
    registry.write_text(
        "practitioner_code,institution_code,role,registered_on,deregistered_on\n"
        f"{DOCTOR},{OLD_HOSPITAL},doctor,2015-03-01,\n"  # left open by the registry
        f"{COLLEAGUE},{OLD_HOSPITAL},doctor,2015-03-01,\n"
        f"{DOCTOR},{NEW_HOSPITAL},doctor,{REREGISTERED_ON.isoformat()},\n"
    )
    ledger = out / "ledger.csv"
    on = TERMINATED_ON.isoformat()
    ledger.write_text(
        "event_id,practitioner_code,institution_code,kind,points,effective_on,"
        "suspension_months,reference,case_id\n"
        f"E10,{DOCTOR},{OLD_HOSPITAL},SCORE,6,{on},,decision 1,K1\n"
        f"E9,{DOCTOR},{OLD_HOSPITAL},SCORE,6,{on},,decision 2,K2\n"
    )
    return registry, ledger


@pytest.fixture(scope="module")
def gateway(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    prefix = "e2e-points-termination"
    registry, ledger = write_inputs(tmp_path_factory.mktemp("points"))
    code = loader_main(
        [
            "load",
            "--registry", str(registry),
            "--ledger", str(ledger),
            "--redis-url", redis_url,
            "--prefix", prefix,
        ]
    )  # fmt: skip
    assert code == 0
    with GatewayProcess(redis_url, prefix) as process:
        yield process


@pytest.fixture
def stub(gateway: GatewayProcess) -> Iterator[pb_grpc.EligibilityGatewayStub]:
    with grpc.insecure_channel(gateway.address) as channel:
        yield pb_grpc.EligibilityGatewayStub(channel)


def hospital_claim(institution: str, *codes: str) -> pb.CheckClaimRequest:
    return pb.CheckClaimRequest(
        claim_id=f"HIS-{institution}",
        institution_code=institution,
        channel=pb.CHANNEL_HOSPITAL,
        service_date=DATE,
        lines=[pb.ClaimLine(line_id=str(i), prescriber_code=c) for i, c in enumerate(codes)],
    )


def decisions(response: pb.CheckClaimResponse) -> list[tuple[str, int, int]]:
    return [(ld.line_id, ld.decision, ld.reason) for ld in response.lines]


def test_the_old_institution_no_longer_pays_after_re_registration_elsewhere(
    stub: pb_grpc.EligibilityGatewayStub,
) -> None:
    response = stub.CheckClaim(hospital_claim(OLD_HOSPITAL, DOCTOR, COLLEAGUE), timeout=5)
    assert decisions(response) == [
        ("0", pb.DECISION_REJECT, pb.REASON_NOT_REGISTERED_AT_INSTITUTION),
        ("1", pb.DECISION_PAY, pb.REASON_OK),
    ]


def test_the_new_institution_pays(stub: pb_grpc.EligibilityGatewayStub) -> None:
    response = stub.CheckClaim(hospital_claim(NEW_HOSPITAL, DOCTOR), timeout=5)
    assert decisions(response) == [("0", pb.DECISION_PAY, pb.REASON_OK)]


def test_status_names_only_the_new_institution(stub: pb_grpc.EligibilityGatewayStub) -> None:
    response = stub.GetPractitionerStatus(
        pb.GetPractitionerStatusRequest(practitioner_code=DOCTOR), timeout=5
    )
    assert response.status == pb.STATUS_ACTIVE
    assert list(response.institution_codes) == [NEW_HOSPITAL]
