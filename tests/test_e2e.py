"""End to end: the loader publishes to a real redis-server, the real gateway
(``python -m gateway`` in a child process) loads it, and the tests call all
three RPCs, the health service and reflection over gRPC."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from contract.changes import index_version
from contract.days import today_cst
from contract.domain import Status
from contract.snapshot import Keys
from loader.pipeline import build_snapshot, read_inputs
from loader.publish import publish_snapshot
from loader.sample import FIXED, write_sample
from proto.eligibility.v1 import eligibility_pb2 as pb
from proto.eligibility.v1 import eligibility_pb2_grpc as pb_grpc
from tests.factory import Person, build_arrays
from tests.gateway_process import ROOT, GatewayProcess

TODAY = today_cst()
DATE = TODAY.year * 10000 + TODAY.month * 100 + TODAY.day


def publish_sample(redis_url: str, prefix: str, out: Path) -> int:
    files = write_sample(out, 500)
    arrays, meta = build_snapshot(read_inputs(files.registry, files.status))
    client = redis.Redis.from_url(redis_url)
    try:
        return publish_snapshot(client, Keys(prefix), arrays, meta).version
    finally:
        client.close()


@pytest.fixture(scope="module")
def sample_gateway(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, str]]:
    prefix = "e2e-sample"
    publish_sample(redis_url, prefix, tmp_path_factory.mktemp("sample"))
    with GatewayProcess(redis_url, prefix, "--max-lines-per-claim", "1000") as gateway:
        yield gateway, prefix


@pytest.fixture
def stub(sample_gateway: tuple[GatewayProcess, str]) -> Iterator[pb_grpc.EligibilityGatewayStub]:
    with grpc.insecure_channel(sample_gateway[0].address) as channel:
        yield pb_grpc.EligibilityGatewayStub(channel)


def hospital_claim(claim_id: str, *lines: pb.ClaimLine, **fields: object) -> pb.CheckClaimRequest:
    base: dict[str, object] = {
        "claim_id": claim_id,
        "institution_code": FIXED.hospital,
        "channel": pb.CHANNEL_HOSPITAL,
        "service_date": DATE,
        "lines": list(lines),
    }
    base.update(fields)
    return pb.CheckClaimRequest(**base)  # type: ignore[arg-type]


def line(code: str, line_id: str = "1", **fields: object) -> pb.ClaimLine:
    return pb.ClaimLine(line_id=line_id, prescriber_code=code, **fields)  # type: ignore[arg-type]


def decisions(response: pb.CheckClaimResponse) -> list[tuple[str, int, int]]:
    return [(ld.line_id, ld.decision, ld.reason) for ld in response.lines]


def test_health_says_serving_and_reflection_lists_the_services(
    sample_gateway: tuple[GatewayProcess, str],
) -> None:
    gateway, _ = sample_gateway
    assert gateway.health() == health_pb2.HealthCheckResponse.SERVING
    with grpc.insecure_channel(gateway.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = {s.name for a in answers for s in a.list_services_response.service}
    assert {"eligibility.v1.EligibilityGateway", "grpc.health.v1.Health"} <= names


def test_check_claim_decides_every_line(stub: pb_grpc.EligibilityGatewayStub) -> None:
    response = stub.CheckClaim(
        hospital_claim(
            "HIS-1",
            line(FIXED.active_doctor, "a"),
            line(FIXED.suspended_doctor, "b"),
            line(FIXED.suspended_doctor, "c", emergency=True),
            line(FIXED.terminated_doctor, "d"),
            line(FIXED.deregistered_doctor, "e"),
            line(FIXED.second_hospital_doctor, "f"),
            line("D1101", "g"),
        ),
        timeout=5,
    )
    assert response.claim_id == "HIS-1"
    assert response.index_version >= 1
    assert response.rejected_lines == 5
    assert decisions(response) == [
        ("a", pb.DECISION_PAY, pb.REASON_OK),
        ("b", pb.DECISION_REJECT, pb.REASON_SUSPENDED),
        ("c", pb.DECISION_PAY_EMERGENCY_OVERRIDE, pb.REASON_SUSPENDED),
        ("d", pb.DECISION_REJECT, pb.REASON_TERMINATED),
        ("e", pb.DECISION_REJECT, pb.REASON_NOT_REGISTERED),
        ("f", pb.DECISION_REJECT, pb.REASON_NOT_REGISTERED_AT_INSTITUTION),
        ("g", pb.DECISION_REJECT, pb.REASON_INVALID_PRESCRIBER_CODE),
    ]
    until = (TODAY + dt.timedelta(days=60)).strftime("%Y%m%d")
    assert response.lines[1].status_until == int(until)


def test_pharmacy_claims_check_the_principal(stub: pb_grpc.EligibilityGatewayStub) -> None:
    def basket(pharmacy: str, principal: str) -> pb.CheckClaimResponse:
        return stub.CheckClaim(
            pb.CheckClaimRequest(
                claim_id="POS-1",
                institution_code=pharmacy,
                channel=pb.CHANNEL_PHARMACY,
                principal_code=principal,
                service_date=DATE,
                lines=[line(FIXED.second_hospital_doctor, "1"), line("", "2")],
            ),
            timeout=5,
        )

    assert decisions(basket(FIXED.pharmacy, FIXED.active_principal)) == [
        ("1", pb.DECISION_PAY, pb.REASON_OK),
        ("2", pb.DECISION_PAY, pb.REASON_OK),
    ]
    rejected = basket(FIXED.pharmacy_with_suspended_principal, FIXED.suspended_principal)
    assert [d for _, d, _ in decisions(rejected)] == [pb.DECISION_REJECT] * 2
    assert {r for _, _, r in decisions(rejected)} == {pb.REASON_PRINCIPAL_NOT_PAYABLE}


def test_the_stream_answers_in_request_order(stub: pb_grpc.EligibilityGatewayStub) -> None:
    codes = [FIXED.active_doctor, FIXED.suspended_doctor, FIXED.terminated_doctor]
    requests = [hospital_claim(f"S-{i}", line(codes[i % 3], str(i))) for i in range(300)]
    responses = list(stub.CheckClaims(iter(requests), timeout=30))
    assert [r.claim_id for r in responses] == [r.claim_id for r in requests]
    unary = [stub.CheckClaim(r, timeout=5) for r in requests[:3]]
    assert [decisions(r) for r in responses[:3]] == [decisions(r) for r in unary]


def test_a_bad_request_in_the_stream_ends_it_naming_position_and_field(
    stub: pb_grpc.EligibilityGatewayStub,
) -> None:
    requests = [
        hospital_claim("ok-0", line(FIXED.active_doctor)),
        hospital_claim("bad-1", line(FIXED.active_doctor), service_date=20251399),
    ]
    received = []
    with pytest.raises(grpc.RpcError) as info:
        for response in stub.CheckClaims(iter(requests), timeout=5):
            received.append(response.claim_id)
    assert received == ["ok-0"]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request 1" in (info.value.details() or "")
    assert "service_date" in (info.value.details() or "")


def test_practitioner_status(stub: pb_grpc.EligibilityGatewayStub) -> None:
    response = stub.GetPractitionerStatus(
        pb.GetPractitionerStatusRequest(practitioner_code=FIXED.suspended_doctor), timeout=5
    )
    assert response.status == pb.STATUS_SUSPENDED
    assert response.date == DATE
    assert set(response.institution_codes) == {FIXED.hospital, FIXED.second_hospital}
    assert response.index_version >= 1


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (hospital_claim("", line(FIXED.active_doctor)), "claim_id"),
        (hospital_claim("no-lines"), "lines"),
        (hospital_claim("huge", *[line(FIXED.active_doctor)] * 100_000), "lines"),
        (hospital_claim("date", line(FIXED.active_doctor), service_date=20251399), "service_date"),
        (
            hospital_claim("future", line(FIXED.active_doctor), service_date=DATE + 10000),
            "service_date",
        ),
        (
            pb.CheckClaimRequest(
                claim_id="pos",
                institution_code=FIXED.pharmacy,
                channel=pb.CHANNEL_PHARMACY,
                service_date=DATE,
                lines=[line(FIXED.active_doctor)],
            ),
            "principal_code",
        ),
    ],
)
def test_malformed_requests_get_invalid_argument_and_the_server_goes_on(
    stub: pb_grpc.EligibilityGatewayStub, request_: pb.CheckClaimRequest, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.CheckClaim(request_, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith(field)
    after = stub.CheckClaim(hospital_claim("next", line(FIXED.active_doctor)), timeout=5)
    assert decisions(after) == [("1", pb.DECISION_PAY, pb.REASON_OK)]


def test_a_megabyte_code_only_rejects_its_line(stub: pb_grpc.EligibilityGatewayStub) -> None:
    response = stub.CheckClaim(
        hospital_claim("big", line("D" * 1_000_000, "1"), line(FIXED.active_doctor, "2")),
        timeout=10,
    )
    assert decisions(response) == [
        ("1", pb.DECISION_REJECT, pb.REASON_INVALID_PRESCRIBER_CODE),
        ("2", pb.DECISION_PAY, pb.REASON_OK),
    ]


def test_emergency_overrides_are_recorded_in_redis(
    stub: pb_grpc.EligibilityGatewayStub,
    sample_gateway: tuple[GatewayProcess, str],
    redis_client: redis.Redis,
) -> None:
    claim_id = f"EMERG-{time.time_ns()}"
    stub.CheckClaim(
        hospital_claim(claim_id, line(FIXED.suspended_doctor, "9", emergency=True)), timeout=5
    )
    stream = Keys(sample_gateway[1]).overrides
    deadline = time.monotonic() + 5
    records: list[dict[bytes, bytes]] = []
    while time.monotonic() < deadline and not records:
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], redis_client.xrange(stream))
        records = [fields for _, fields in entries if fields[b"claim_id"] == claim_id.encode()]
        time.sleep(0.05)
    assert len(records) == 1
    record = records[0]
    assert record[b"practitioner_code"] == FIXED.suspended_doctor.encode()
    assert record[b"institution_code"] == FIXED.hospital.encode()
    assert record[b"service_date"] == str(DATE).encode()
    assert record[b"overridden_reason"] == b"SUSPENDED"
    assert int(record[b"index_version"]) >= 1


def test_not_serving_until_a_snapshot_is_published_then_swapped_atomically(
    redis_url: str, redis_client: redis.Redis, prefix: str
) -> None:
    doctor, hospital = "D220105000001", "H22010500001"
    keys = Keys(prefix)
    with GatewayProcess(redis_url, prefix).start(wait_serving=False) as gateway:
        assert gateway.health() == health_pb2.HealthCheckResponse.NOT_SERVING
        with grpc.insecure_channel(gateway.address) as channel:
            stub = pb_grpc.EligibilityGatewayStub(channel)
            claim = hospital_claim("X", line(doctor), institution_code=hospital, service_date=DATE)
            with pytest.raises(grpc.RpcError) as info:
                stub.CheckClaim(claim, timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE

            active = [Person(doctor, [(hospital, "2020-01-01", None)])]
            v1 = publish_snapshot(redis_client, keys, build_arrays(active)).version
            gateway.wait_health(health_pb2.HealthCheckResponse.SERVING, 10)
            first = stub.CheckClaim(claim, timeout=5)
            assert (first.index_version, decisions(first)) == (
                index_version(v1, 0),
                [("1", pb.DECISION_PAY, pb.REASON_OK)],
            )

            start = (TODAY - dt.timedelta(days=1)).isoformat()
            suspended = [
                Person(
                    doctor,
                    [(hospital, "2020-01-01", None)],
                    [(start, Status.SUSPENDED, (TODAY + dt.timedelta(days=30)).isoformat())],
                )
            ]
            v2 = publish_snapshot(redis_client, keys, build_arrays(suspended)).version
            deadline = time.monotonic() + 10
            while (response := stub.CheckClaim(claim, timeout=5)).index_version < index_version(
                v2, 0
            ):
                assert response.index_version == index_version(v1, 0)
                assert decisions(response) == [("1", pb.DECISION_PAY, pb.REASON_OK)]
                assert time.monotonic() < deadline, "new snapshot not picked up"
                time.sleep(0.02)
            assert decisions(response) == [("1", pb.DECISION_REJECT, pb.REASON_SUSPENDED)]


def test_sigterm_stops_the_gateway_cleanly(redis_url: str, prefix: str) -> None:
    gateway = GatewayProcess(redis_url, prefix).start(wait_serving=False)
    assert gateway.stop() == 0


@pytest.mark.slow
def test_the_embedded_default_shows_claims_being_decided() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "--exit-after-demo", "--port", "0",
         "--sample-practitioners", "300"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "PAY_EMERGENCY_OVERRIDE" in proc.stdout
    assert "PRINCIPAL_NOT_PAYABLE" in proc.stdout
    assert "NOT_REGISTERED_AT_INSTITUTION" in proc.stdout
    assert f"status of {FIXED.suspended_doctor}" in proc.stdout
