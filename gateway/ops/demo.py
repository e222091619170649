"""The demo the embedded default shows: a few claims sent to the running
gateway over real gRPC, and their decisions printed line by line.

The practitioners and institutions come from the sample data set's
``fixture.json``, which ``loader sample`` writes beside the files (the
gateway never imports the loader)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace

import grpc
import orjson

from contract.changes import split_index_version
from contract.days import today_cst
from proto.eligibility.v1 import eligibility_pb2 as pb
from proto.eligibility.v1 import eligibility_pb2_grpc as pb_grpc

FIXTURE_FILE = "fixture.json"
_FIXTURE_FIELDS = (
    "hospital",
    "second_hospital",
    "pharmacy",
    "pharmacy_with_suspended_principal",
    "active_doctor",
    "warned_doctor",
    "suspended_doctor",
    "terminated_doctor",
    "deregistered_doctor",
    "second_hospital_doctor",
    "points_warned_doctor",
    "points_suspended_doctor",
    "active_principal",
    "suspended_principal",
)


def read_fixture(data_dir: Path) -> SimpleNamespace:
    """The sample's fixed codes (``fixture.json``); ``ValueError`` naming a missing one."""
    fixture = orjson.loads((data_dir / FIXTURE_FILE).read_bytes())
    missing = [name for name in _FIXTURE_FIELDS if not isinstance(fixture.get(name), str)]
    if missing:
        raise ValueError(f"{data_dir / FIXTURE_FILE}: missing {', '.join(missing)}")
    return SimpleNamespace(**{name: fixture[name] for name in _FIXTURE_FIELDS})


def _yyyymmdd(date: dt.date) -> int:
    return date.year * 10000 + date.month * 100 + date.day


def demo_claims(today: dt.date, fixed: SimpleNamespace) -> list[pb.CheckClaimRequest]:
    """A hospital settlement and two pharmacy baskets exercising every rule."""
    date = _yyyymmdd(today)
    long_ago = _yyyymmdd(today - dt.timedelta(days=150))
    line = pb.ClaimLine
    return [
        pb.CheckClaimRequest(
            claim_id="HIS-20251125-0001",
            institution_code=fixed.hospital,
            channel=pb.CHANNEL_HOSPITAL,
            service_date=date,
            lines=[
                line(line_id="1", prescriber_code=fixed.active_doctor, amount_fen=12800),
                line(line_id="2", prescriber_code=fixed.warned_doctor, amount_fen=4500),
                line(line_id="3", prescriber_code=fixed.suspended_doctor, amount_fen=23000),
                line(
                    line_id="4",
                    prescriber_code=fixed.suspended_doctor,
                    emergency=True,
                    item_code="抢救",
                    amount_fen=98000,
                ),
                line(
                    line_id="5",
                    prescriber_code=fixed.suspended_doctor,
                    service_date=long_ago,
                    amount_fen=5600,
                ),
                line(line_id="6", prescriber_code=fixed.terminated_doctor, amount_fen=3100),
                line(line_id="7", prescriber_code=fixed.deregistered_doctor, amount_fen=700),
                line(line_id="8", prescriber_code=fixed.second_hospital_doctor, amount_fen=900),
                line(line_id="9", prescriber_code="D1101-BAD", amount_fen=100),
                # Statuses derived by the points engine from the scoring ledger.
                line(line_id="10", prescriber_code=fixed.points_warned_doctor, amount_fen=800),
                line(line_id="11", prescriber_code=fixed.points_suspended_doctor, amount_fen=800),
            ],
        ),
        pb.CheckClaimRequest(
            claim_id="POS-20251125-0042",
            institution_code=fixed.pharmacy,
            channel=pb.CHANNEL_PHARMACY,
            principal_code=fixed.active_principal,
            service_date=date,
            lines=[
                line(line_id="1", prescriber_code=fixed.second_hospital_doctor, amount_fen=3650),
                line(line_id="2", prescriber_code="", item_code="OTC", amount_fen=1200),
            ],
        ),
        pb.CheckClaimRequest(
            claim_id="POS-20251125-0043",
            institution_code=fixed.pharmacy_with_suspended_principal,
            channel=pb.CHANNEL_PHARMACY,
            principal_code=fixed.suspended_principal,
            service_date=date,
            lines=[line(line_id="1", prescriber_code=fixed.active_doctor, amount_fen=2300)],
        ),
    ]


def _name(enum: object, value: int) -> str:
    return str(enum.Name(value)).split("_", 1)[1]  # type: ignore[attr-defined]


def format_response(request: pb.CheckClaimRequest, response: pb.CheckClaimResponse) -> str:
    channel = _name(pb.Channel, request.channel)
    snapshot, change = split_index_version(response.index_version)
    out = [
        f"claim {response.claim_id} ({channel} {request.institution_code}, "
        f"index_version {response.index_version} = snapshot {snapshot}, change {change}): "
        f"{response.rejected_lines} of "
        f"{len(response.lines)} lines rejected"
    ]
    for req_line, decision in zip(request.lines, response.lines, strict=True):
        until = f" until {decision.status_until}" if decision.status_until else ""
        emergency = " emergency" if req_line.emergency else ""
        out.append(
            f"  line {decision.line_id:>2} {req_line.prescriber_code or '(OTC)':<15}"
            f"{emergency:<10} -> {_name(pb.Decision, decision.decision):<26}"
            f"{_name(pb.Reason, decision.reason):<30}"
            f"{_name(pb.PractitionerStatus, decision.status)}{until}"
        )
    return "\n".join(out)


async def show_demo_claims(address: str, data_dir: Path) -> None:
    """Send the demo claims to the gateway at ``address`` and print the answers."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.EligibilityGatewayStub(channel)
        fixed = read_fixture(data_dir)
        for request in demo_claims(today_cst(), fixed):
            response = await stub.CheckClaim(request, timeout=5)
            print(format_response(request, response), flush=True)
        for code in (fixed.suspended_doctor, fixed.points_suspended_doctor):
            status = await stub.GetPractitionerStatus(
                pb.GetPractitionerStatusRequest(practitioner_code=code), timeout=5
            )
            points = f", {status.points} points this year" if status.points_known else ""
            print(
                f"status of {status.practitioner_code} on {status.date}: "
                f"{_name(pb.PractitionerStatus, status.status)} until {status.status_until}"
                f"{points}, registered at {', '.join(status.institution_codes)}",
                flush=True,
            )
