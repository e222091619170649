"""Hostile input over the wire: hypothesis-generated claims and raw random
bytes sent to the real gateway (``python -m gateway`` in a child process,
one for the module) over gRPC.

Every call must end, within its deadline, with decisions (one per line, ids
echoed) or ``INVALID_ARGUMENT`` whose message starts with the field at
fault; never UNKNOWN or INTERNAL. After each example the server must still
say SERVING and still decide a valid claim. The decisions for valid lines
must not depend on the garbage lines sent with them in the same claim.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from contract.days import today_cst
from loader.sample import FIXED
from proto.eligibility.v1 import eligibility_pb2 as pb
from proto.eligibility.v1 import eligibility_pb2_grpc as pb_grpc
from tests.gateway_process import GatewayProcess
from tests.test_e2e import publish_sample

MAX_LINES = 40
MAX_MESSAGE_BYTES = 4 << 20  # the gateway's default
TIMEOUT_S = 10.0
TODAY = today_cst()
DATE = int(TODAY.strftime("%Y%m%d"))
UNARY = "/eligibility.v1.EligibilityGateway/CheckClaim"
STREAM = "/eligibility.v1.EligibilityGateway/CheckClaims"
STATUS = "/eligibility.v1.EligibilityGateway/GetPractitionerStatus"
# What an INVALID_ARGUMENT message may start with: the field at fault.
FIELD = re.compile(
    r"^(request \d+ \(claim_id .*\): )?"
    r"(claim_id|channel|institution_code|lines|service_date|principal_code"
    r"|lines\[\d+\]\.service_date|lines\[\d+\]\.amount_fen|request|practitioner_code|date): ",
    re.DOTALL,
)
KNOWN_CODES = [
    FIXED.active_doctor,
    FIXED.warned_doctor,
    FIXED.suspended_doctor,
    FIXED.terminated_doctor,
    FIXED.deregistered_doctor,
    FIXED.formerly_suspended_nurse,
    FIXED.future_suspended_doctor,
    FIXED.second_hospital_doctor,
    FIXED.technician,
    FIXED.pharmacist,
    FIXED.active_principal,
    FIXED.suspended_principal,
]
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

Gateway = tuple[GatewayProcess, grpc.Channel]


@pytest.fixture(scope="module")
def gateway(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    prefix = "fuzz-requests"
    publish_sample(redis_url, prefix, tmp_path_factory.mktemp("fuzz-sample"))
    args = ("--max-lines-per-claim", str(MAX_LINES))
    with (
        GatewayProcess(redis_url, prefix, *args) as process,
        grpc.insecure_channel(process.address) as channel,
    ):
        yield process, channel
        assert process.proc is not None and process.proc.poll() is None, process.log()


def yyyymmdd(date: dt.date) -> int:
    return date.year * 10000 + date.month * 100 + date.day


def assert_alive(gateway: Gateway) -> None:
    """Health still SERVING and a valid claim still decided."""
    process, channel = gateway
    assert process.proc is not None and process.proc.poll() is None, process.log()
    health = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S
    )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    response = pb_grpc.EligibilityGatewayStub(channel).CheckClaim(
        pb.CheckClaimRequest(
            claim_id="alive",
            institution_code=FIXED.hospital,
            channel=pb.CHANNEL_HOSPITAL,
            service_date=DATE,
            lines=[pb.ClaimLine(line_id="1", prescriber_code=FIXED.active_doctor)],
        ),
        timeout=TIMEOUT_S,
    )
    assert [(d.decision, d.reason) for d in response.lines] == [(pb.DECISION_PAY, pb.REASON_OK)]


def assert_refused_with_a_field(error: grpc.RpcError, size: int = 0) -> None:
    """INVALID_ARGUMENT naming the field (RESOURCE_EXHAUSTED only for a message
    over the server's --max-message-bytes, which gRPC refuses before the gateway)."""
    if size > MAX_MESSAGE_BYTES:
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (error.code(), error.details())
        return
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    match = FIELD.match(error.details() or "")
    assert match, error.details()
    event(f"refused: {match.group(2)}")


def assert_decided(request: pb.CheckClaimRequest, response: pb.CheckClaimResponse) -> None:
    event("decided")
    assert response.claim_id == request.claim_id
    assert [d.line_id for d in response.lines] == [line.line_id for line in request.lines]
    assert response.index_version >= 1
    decisions = [d.decision for d in response.lines]
    assert set(decisions) <= {
        pb.DECISION_PAY,
        pb.DECISION_REJECT,
        pb.DECISION_PAY_EMERGENCY_OVERRIDE,
    }
    assert response.rejected_lines == decisions.count(pb.DECISION_REJECT)
    for line, decided in zip(request.lines, response.lines, strict=True):
        if decided.decision == pb.DECISION_PAY_EMERGENCY_OVERRIDE:
            assert line.emergency
        if decided.reason == pb.REASON_INVALID_PRESCRIBER_CODE:
            assert decided.decision == pb.DECISION_REJECT


# ---------------------------------------------------------------------------
# Strategies

int32s = st.integers(-(2**31), 2**31 - 1)
int64s = st.integers(-(2**63), 2**63 - 1)
amounts = st.integers(0, 2**63 - 1)
past_dates = st.dates(dt.date(1970, 1, 1), TODAY).map(yyyymmdd)
any_dates = st.one_of(
    st.just(0),
    past_dates,
    st.dates(TODAY, dt.date(9999, 12, 31)).map(yyyymmdd),
    int32s,
    st.integers(19700101, 21491231),
)
any_text = st.text(max_size=40)
huge_text = st.builds(
    lambda c, n: c * n, st.characters(exclude_categories=["Cs"]), st.integers(1000, 100_000)
)  # Cs: lone surrogates cannot be encoded as UTF-8 at all, by any client
code_like = st.from_regex(r"\A[A-Z]{1,3}[0-9]{11,13}\Z")
unicode_code = st.from_regex(r"\A[A-Z]{1,2}\d{12}\Z")  # \d: any Unicode digit, e.g. fullwidth
prescriber_codes = st.one_of(
    st.sampled_from(KNOWN_CODES), st.just(""), code_like, unicode_code, any_text, huge_text
)
institution_codes = st.one_of(
    st.sampled_from([FIXED.hospital, FIXED.second_hospital, FIXED.pharmacy, "H99999999999"]),
    st.from_regex(r"\A[A-Z][0-9]{10,12}\Z"),
    any_text,
)
channels = st.one_of(
    st.sampled_from([pb.CHANNEL_HOSPITAL, pb.CHANNEL_PHARMACY, pb.CHANNEL_UNSPECIFIED]), int32s
)
claim_ids = st.one_of(st.text(min_size=1, max_size=20), st.just(""), huge_text)


@st.composite
def claim_lines(draw: st.DrawFn, dates: st.SearchStrategy[int] = any_dates) -> pb.ClaimLine:
    return pb.ClaimLine(
        line_id=draw(st.one_of(any_text, huge_text)),
        prescriber_code=draw(prescriber_codes),
        service_date=draw(dates),
        emergency=draw(st.booleans()),
        item_code=draw(st.one_of(any_text, huge_text)),
        amount_fen=draw(int64s),
    )


@st.composite
def claims(draw: st.DrawFn) -> pb.CheckClaimRequest:
    """Mostly well-formed envelopes (so that most claims reach the decisions),
    each field replaced by anything at all one time in four."""

    def field(good: st.SearchStrategy[object], anything: st.SearchStrategy[object]) -> object:
        return draw(anything if draw(st.integers(0, 3)) == 0 else good)

    pharmacy = draw(st.booleans())
    return pb.CheckClaimRequest(
        claim_id=field(st.text(min_size=1, max_size=20), claim_ids),  # type: ignore[arg-type]
        institution_code=field(  # type: ignore[arg-type]
            st.just(FIXED.pharmacy if pharmacy else FIXED.hospital), institution_codes
        ),
        channel=field(  # type: ignore[arg-type]  # unknown values are legal on the wire
            st.just(pb.CHANNEL_PHARMACY if pharmacy else pb.CHANNEL_HOSPITAL), channels
        ),
        principal_code=field(  # type: ignore[arg-type]
            st.just(FIXED.active_principal if pharmacy else ""), prescriber_codes
        ),
        service_date=field(past_dates, any_dates),  # type: ignore[arg-type]
        lines=draw(
            st.lists(
                claim_lines(
                    st.one_of(st.just(0), past_dates) if draw(st.integers(0, 3)) else any_dates
                ),
                max_size=MAX_LINES + 5,
            )
        ),
    )


def valid_line(draw: st.DrawFn, line_id: str) -> pb.ClaimLine:
    return pb.ClaimLine(
        line_id=line_id,
        prescriber_code=draw(st.sampled_from(KNOWN_CODES)),
        service_date=draw(st.one_of(st.just(0), past_dates)),
        emergency=draw(st.booleans()),
        item_code=draw(any_text),
        amount_fen=draw(amounts),  # a negative one refuses the claim
    )


def garbage_line(draw: st.DrawFn, line_id: str) -> pb.ClaimLine:
    """A line the gateway must reject on its own (bad or unknown code) without
    refusing the claim: its date, if any, is a real past date."""
    # Letters the sample never uses: a well-formed code here is an unknown one.
    unknown = st.from_regex(r"\A[Q-Z]{1,3}[0-9]{11,13}\Z")
    code = draw(
        st.one_of(unknown, unicode_code, any_text, huge_text).filter(lambda c: c not in KNOWN_CODES)
    )
    return pb.ClaimLine(
        line_id=line_id,
        prescriber_code=code,
        service_date=draw(st.one_of(st.just(0), past_dates)),
        emergency=draw(st.booleans()),
        item_code=draw(st.one_of(any_text, huge_text)),
        amount_fen=draw(amounts),
    )


@st.composite
def mixed_claims(draw: st.DrawFn) -> tuple[pb.CheckClaimRequest, pb.CheckClaimRequest]:
    """(the valid lines alone, the same lines shuffled in among garbage lines)."""
    pharmacy = draw(st.booleans())
    n_valid = draw(st.integers(1, 12))
    n_garbage = draw(st.integers(1, MAX_LINES - n_valid))
    valid = [valid_line(draw, f"v{i}") for i in range(n_valid)]
    garbage = [garbage_line(draw, f"g{i}") for i in range(n_garbage)]
    mixed = draw(st.permutations(valid + garbage))
    envelope: dict[str, object] = {
        "claim_id": draw(st.text(min_size=1, max_size=20)),
        "service_date": draw(past_dates),
    }
    if pharmacy:
        envelope |= {
            "institution_code": FIXED.pharmacy,
            "channel": pb.CHANNEL_PHARMACY,
            "principal_code": FIXED.active_principal,
        }
    else:
        envelope |= {"institution_code": FIXED.hospital, "channel": pb.CHANNEL_HOSPITAL}
    return (
        pb.CheckClaimRequest(lines=valid, **envelope),  # type: ignore[arg-type]
        pb.CheckClaimRequest(lines=mixed, **envelope),  # type: ignore[arg-type]
    )


def valid_claim_bytes(draw: st.DrawFn) -> bytes:
    claim = pb.CheckClaimRequest(
        claim_id="fuzz",
        institution_code=FIXED.hospital,
        channel=pb.CHANNEL_HOSPITAL,
        service_date=DATE,
        lines=[valid_line(draw, str(i)) for i in range(draw(st.integers(1, 5)))],
    )
    return claim.SerializeToString()


@st.composite
def mutated_bodies(draw: st.DrawFn) -> bytes:
    """A valid claim's bytes, then flipped, inserted, deleted or cut bytes: most
    stay close enough to the wire format to reach the parser's corners."""
    data = bytearray(valid_claim_bytes(draw))
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        if op == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 4))]
        elif op == "cut":
            del data[pos:]
    return bytes(data)


bodies = st.one_of(
    st.binary(max_size=2048),
    mutated_bodies(),
    st.binary(min_size=1, max_size=64).map(lambda b: b * 2000),  # repeated: long fields
)


# ---------------------------------------------------------------------------
# Tests


@FUZZ
@given(request=claims())
def test_any_claim_is_decided_or_refused_naming_the_field(
    gateway: Gateway, request: pb.CheckClaimRequest
) -> None:
    stub = pb_grpc.EligibilityGatewayStub(gateway[1])
    try:
        response = stub.CheckClaim(request, timeout=TIMEOUT_S)
    except grpc.RpcError as error:
        assert_refused_with_a_field(error, request.ByteSize())
    else:
        assert_decided(request, response)
    assert_alive(gateway)


@FUZZ
@given(pair=mixed_claims())
@pytest.mark.slow
def test_valid_lines_are_decided_the_same_with_garbage_lines_around_them(
    gateway: Gateway, pair: tuple[pb.CheckClaimRequest, pb.CheckClaimRequest]
) -> None:
    alone, mixed = pair
    stub = pb_grpc.EligibilityGatewayStub(gateway[1])
    by_alone = {d.line_id: d for d in stub.CheckClaim(alone, timeout=TIMEOUT_S).lines}
    mixed_response = stub.CheckClaim(mixed, timeout=TIMEOUT_S)
    assert_decided(mixed, mixed_response)
    for decided in mixed_response.lines:
        if decided.line_id.startswith("v"):
            assert decided == by_alone[decided.line_id]
        elif mixed.channel == pb.CHANNEL_HOSPITAL:
            # A bad or unknown code never pays on a hospital claim.
            assert decided.decision == pb.DECISION_REJECT
            assert decided.reason in {
                pb.REASON_INVALID_PRESCRIBER_CODE,
                pb.REASON_NOT_REGISTERED,
            }
    assert len(by_alone) == len(alone.lines)


@FUZZ
@given(requests=st.lists(claims(), min_size=1, max_size=4))
@pytest.mark.slow
def test_the_stream_answers_in_order_until_a_bad_request_which_it_names(
    gateway: Gateway, requests: list[pb.CheckClaimRequest]
) -> None:
    stub = pb_grpc.EligibilityGatewayStub(gateway[1])
    received: list[pb.CheckClaimResponse] = []
    try:
        for response in stub.CheckClaims(iter(requests), timeout=TIMEOUT_S):
            received.append(response)
    except grpc.RpcError as error:
        assert_refused_with_a_field(error, max(r.ByteSize() for r in requests))
        assert (error.details() or "").startswith(f"request {len(received)} ")
    else:
        assert len(received) == len(requests)
    for request, response in zip(requests, received, strict=False):
        assert_decided(request, response)
    assert_alive(gateway)


@FUZZ
@given(body=bodies)
def test_random_bytes_as_a_claim_get_decisions_or_invalid_argument(
    gateway: Gateway, body: bytes
) -> None:
    call = gateway[1].unary_unary(UNARY, request_serializer=None, response_deserializer=None)
    try:
        raw = call(body, timeout=TIMEOUT_S)
    except grpc.RpcError as error:
        assert_refused_with_a_field(error)
    else:
        assert_decided(pb.CheckClaimRequest.FromString(body), pb.CheckClaimResponse.FromString(raw))
    assert_alive(gateway)


@FUZZ
@given(bodies_=st.lists(bodies, min_size=1, max_size=4))
def test_random_bytes_on_the_stream_get_decisions_or_invalid_argument(
    gateway: Gateway, bodies_: list[bytes]
) -> None:
    call = gateway[1].stream_stream(STREAM, request_serializer=None, response_deserializer=None)
    received: list[bytes] = []
    try:
        for raw in call(iter(bodies_), timeout=TIMEOUT_S):
            received.append(raw)
    except grpc.RpcError as error:
        assert_refused_with_a_field(error)
        assert (error.details() or "").startswith(f"request {len(received)} ")
    else:
        assert len(received) == len(bodies_)
    for body, raw in zip(bodies_, received, strict=False):
        assert_decided(pb.CheckClaimRequest.FromString(body), pb.CheckClaimResponse.FromString(raw))
    assert_alive(gateway)


@FUZZ
@given(
    body=st.one_of(
        bodies,
        st.builds(
            lambda code, date: pb.GetPractitionerStatusRequest(
                practitioner_code=code, date=date
            ).SerializeToString(),
            prescriber_codes,
            any_dates,
        ),
    )
)
def test_practitioner_status_of_anything_is_answered_or_refused_naming_the_field(
    gateway: Gateway, body: bytes
) -> None:
    call = gateway[1].unary_unary(STATUS, request_serializer=None, response_deserializer=None)
    try:
        raw = call(body, timeout=TIMEOUT_S)
    except grpc.RpcError as error:
        assert_refused_with_a_field(error)
    else:
        request = pb.GetPractitionerStatusRequest.FromString(body)
        response = pb.GetPractitionerStatusResponse.FromString(raw)
        assert response.practitioner_code == request.practitioner_code
        assert response.index_version >= 1
    assert_alive(gateway)


def test_an_undecodable_body_is_invalid_argument_not_unknown(gateway: Gateway) -> None:
    """Regression: a body that is not a valid message (here: bad UTF-8 in
    claim_id) made gRPC answer UNKNOWN and log a traceback."""
    bad_utf8 = b"\x0a\x02\xc3\x28"
    for method in (UNARY, STATUS):
        call = gateway[1].unary_unary(method, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as info:
            call(bad_utf8, timeout=TIMEOUT_S)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (info.value.details() or "").startswith("request: not a valid eligibility.v1.")
    stream = gateway[1].stream_stream(STREAM, request_serializer=None, response_deserializer=None)
    valid = pb.CheckClaimRequest(
        claim_id="ok",
        institution_code=FIXED.hospital,
        channel=pb.CHANNEL_HOSPITAL,
        service_date=DATE,
        lines=[pb.ClaimLine(line_id="1", prescriber_code=FIXED.active_doctor)],
    ).SerializeToString()
    received = []
    with pytest.raises(grpc.RpcError) as info:
        for raw in stream(iter([valid, bad_utf8]), timeout=TIMEOUT_S):
            received.append(pb.CheckClaimResponse.FromString(raw).claim_id)
    assert received == ["ok"]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith("request 1 (claim_id ''): request: not a valid")
    assert_alive(gateway)
    assert "DecodeError" not in gateway[0].log()
