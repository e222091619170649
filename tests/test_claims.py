"""Request validation: structurally bad claims are refused naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract import codes
from contract.days import yyyymmdd_to_day
from contract.errors import InvalidRequestError
from gateway.claims import parse_claim
from gateway.decide import KEY_EMPTY, KEY_MALFORMED
from proto.eligibility.v1 import eligibility_pb2 as pb

TODAY = yyyymmdd_to_day(20251120)


def claim(**overrides: Any) -> pb.CheckClaimRequest:
    fields: dict[str, Any] = {
        "claim_id": "C1",
        "institution_code": "H11010500001",
        "channel": pb.CHANNEL_HOSPITAL,
        "service_date": 20251110,
        "lines": [pb.ClaimLine(line_id="1", prescriber_code="D110105000001")],
    }
    fields.update(overrides)
    return pb.CheckClaimRequest(**fields)


def refused_field(request: pb.CheckClaimRequest, max_lines: int = 1000) -> str:
    with pytest.raises(InvalidRequestError) as info:
        parse_claim(request, max_lines=max_lines, today_day=TODAY)
    return info.value.field


def test_a_good_claim_parses() -> None:
    parsed = parse_claim(
        claim(
            lines=[
                pb.ClaimLine(prescriber_code="D110105000001"),
                pb.ClaimLine(prescriber_code="bad", service_date=20251101, emergency=True),
                pb.ClaimLine(prescriber_code=""),
            ]
        ),
        max_lines=10,
        today_day=TODAY,
    )
    assert parsed.keys == [codes.encode_practitioner("D110105000001"), KEY_MALFORMED, KEY_EMPTY]
    assert parsed.days == [
        yyyymmdd_to_day(20251110),
        yyyymmdd_to_day(20251101),
        yyyymmdd_to_day(20251110),
    ]
    assert parsed.emergency == [False, True, False]
    assert not parsed.pharmacy
    assert parsed.principal_key == -1


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"claim_id": ""}, "claim_id"),
        ({"claim_id": "x" * 129}, "claim_id"),
        ({"channel": pb.CHANNEL_UNSPECIFIED}, "channel"),
        ({"channel": 7}, "channel"),
        ({"institution_code": ""}, "institution_code"),
        ({"institution_code": "P11010500001"}, "institution_code"),  # hospital claim, P code
        ({"lines": []}, "lines"),
        ({"service_date": 20251399}, "service_date"),
        ({"service_date": 20251121}, "service_date"),  # tomorrow
        ({"service_date": 19691231}, "service_date"),
        (
            {"lines": [pb.ClaimLine(prescriber_code="D110105000001", service_date=20250230)]},
            "lines[0].service_date",
        ),
        (
            {
                "service_date": 0,
                "lines": [
                    pb.ClaimLine(prescriber_code="D110105000001", service_date=20251101),
                    pb.ClaimLine(prescriber_code="D110105000001"),
                ],
            },
            "lines[1].service_date",
        ),
    ],
)
def test_structurally_bad_claims_name_the_field(overrides: dict[str, Any], field: str) -> None:
    assert refused_field(claim(**overrides)) == field


def test_more_lines_than_the_maximum_is_refused() -> None:
    lines = [pb.ClaimLine(prescriber_code="D110105000001")] * 100_000
    assert refused_field(claim(lines=lines), max_lines=1000) == "lines"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"principal_code": ""}, "principal_code"),
        ({"principal_code": "nope"}, "principal_code"),
        ({"service_date": 0}, "service_date"),
        ({"institution_code": "H11010500001"}, "institution_code"),
    ],
)
def test_pharmacy_claims_need_a_principal_and_a_date(overrides: dict[str, Any], field: str) -> None:
    base: dict[str, Any] = {
        "channel": pb.CHANNEL_PHARMACY,
        "institution_code": "P11010500001",
        "principal_code": "HY110105000001",
        "lines": [pb.ClaimLine(prescriber_code="D110105000001", service_date=20251101)],
    }
    base.update(overrides)
    assert refused_field(claim(**base)) == field


def test_a_megabyte_code_is_a_malformed_line_not_a_refused_claim() -> None:
    parsed = parse_claim(
        claim(lines=[pb.ClaimLine(prescriber_code="D" * 1_000_000)]), max_lines=10, today_day=TODAY
    )
    assert parsed.keys == [KEY_MALFORMED]


@given(
    st.text(max_size=30),
    st.sampled_from([0, 1, 2, 3]),
    st.text(max_size=16),
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
    st.lists(st.tuples(st.text(max_size=16), st.integers(-(2**31), 2**31 - 1)), max_size=5),
)
def test_any_request_parses_or_names_a_field(
    claim_id: str,
    channel: int,
    institution: str,
    service_date: int,
    lines: list[tuple[str, int]],
) -> None:
    request = pb.CheckClaimRequest(
        claim_id=claim_id,
        channel=channel,  # type: ignore[arg-type]
        institution_code=institution,
        principal_code="HY110105000001",
        service_date=service_date,
        lines=[pb.ClaimLine(prescriber_code=c, service_date=d) for c, d in lines],
    )
    try:
        parsed = parse_claim(request, max_lines=4, today_day=TODAY)
    except InvalidRequestError as exc:
        assert exc.field.split("[")[0] in {
            "claim_id",
            "channel",
            "institution_code",
            "principal_code",
            "service_date",
            "lines",
        }
    else:
        assert len(parsed.keys) == len(parsed.days) == len(lines)
        assert all(0 <= day <= TODAY for day in parsed.days)


def test_a_negative_amount_is_refused_naming_the_line() -> None:
    lines = [pb.ClaimLine(prescriber_code="D110105000001", amount_fen=100) for _ in range(5)]
    lines[3].amount_fen = -1
    assert refused_field(claim(lines=lines)) == "lines[3].amount_fen"
    lines[3].amount_fen = -(2**63)  # drove the rejected-amount counter to -9.2e18
    with pytest.raises(InvalidRequestError, match=r"lines\[3\]\.amount_fen: -9223372036854775808"):
        parse_claim(claim(lines=lines), max_lines=10, today_day=TODAY)
    lines[3].amount_fen = 0
    assert len(parse_claim(claim(lines=lines), max_lines=10, today_day=TODAY).keys) == 5
