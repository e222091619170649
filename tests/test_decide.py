"""Every decision rule of SPEC §3-4, on a small hand-built index, as the
reference states them (``gateway.decide.decide_line``; tests/test_kernel.py
holds the compiled claim path to the same answers)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest

from contract import codes
from contract.domain import Decision, Reason, Status
from gateway.decide import KEY_EMPTY, Policy, decide_line, principal_payable
from gateway.index import StatusIndex
from tests.factory import Person, build_index, day

H1, H2 = "H11010500001", "H11010500002"
P1, P2, P3, P4 = "P11010500001", "P11010500002", "P11010500003", "P11010500004"
ACTIVE, WARNED, SUSPENDED, TERMINATED = (
    "D110105000001",
    "D110105000002",
    "D110105000003",
    ("D110105000004"),
)
ELSEWHERE, DEREGISTERED, UNKNOWN = "D110105000005", "D110105000006", "D999999999999"
SUSPENDED_ELSEWHERE = "D110105000007"
TERMINATED_DEREGISTERED = "D110105000008"
PRINCIPAL_OK, PRINCIPAL_SUSPENDED = "HY110105000001", "HY110105000002"
PRINCIPAL_AT_P3, PRINCIPAL_TERMINATED = "HY110105000003", "HY110105000004"
SUSPENSION = [("2025-06-01", Status.SUSPENDED, "2025-08-31"), ("2025-09-01", Status.ACTIVE, None)]

PEOPLE = [
    Person(ACTIVE, [(H1, "2020-01-01", None)]),
    Person(WARNED, [(H1, "2020-01-01", None)], [("2025-03-01", Status.WARNED, None)]),
    Person(SUSPENDED, [(H1, "2020-01-01", None)], SUSPENSION),
    Person(TERMINATED, [(H1, "2020-01-01", None)], [("2025-05-01", Status.TERMINATED, None)]),
    Person(ELSEWHERE, [(H2, "2020-01-01", None)]),
    Person(DEREGISTERED, [(H1, "2020-01-01", "2025-01-01")]),
    Person(SUSPENDED_ELSEWHERE, [(H2, "2020-01-01", None)], SUSPENSION),
    Person(
        TERMINATED_DEREGISTERED,
        [(H1, "2020-01-01", "2025-06-01")],
        [("2025-05-01", Status.TERMINATED, None)],
    ),
    Person(PRINCIPAL_OK, [(P1, "2020-01-01", None)]),
    Person(PRINCIPAL_SUSPENDED, [(P2, "2020-01-01", None)], SUSPENSION),
    Person(PRINCIPAL_AT_P3, [(P3, "2020-01-01", None)]),
    Person(
        PRINCIPAL_TERMINATED, [(P4, "2020-01-01", None)], [("2025-01-01", Status.TERMINATED, None)]
    ),
]


@pytest.fixture(scope="module")
def index() -> StatusIndex:
    return build_index(PEOPLE)


def decide(
    index: StatusIndex,
    lines: list[tuple[str, str, bool]],
    *,
    institution: str = H1,
    principal: str | None = None,
    claim_date: str = "2025-07-01",
    policy: Policy | None = None,
) -> Decisions:
    """Decide lines of (practitioner code, service date, emergency)."""
    inst_id = index.institution_id(codes.encode_institution(institution))
    pharmacy = principal is not None
    principal_ok = pharmacy and principal_payable(
        index, codes.try_encode_practitioner(principal or ""), inst_id, day(claim_date)
    )
    verdicts = [
        decide_line(
            index,
            policy or Policy(),
            pharmacy=pharmacy,
            institution_id=inst_id,
            principal_ok=principal_ok,
            key=codes.try_encode_practitioner(code) if code else KEY_EMPTY,
            day=day(date),
            emergency=emergency,
        )
        for code, date, emergency in lines
    ]
    return Decisions(*(np.array(column) for column in zip(*verdicts, strict=True)))


@dataclass(frozen=True)
class Decisions:
    """A claim's verdicts, column by column."""

    decision: npt.NDArray[np.int64]
    reason: npt.NDArray[np.int64]
    status: npt.NDArray[np.int64]
    until_day: npt.NDArray[np.int64]

    @property
    def rejected(self) -> int:
        return int(np.count_nonzero(self.decision == Decision.REJECT))

    @property
    def overridden(self) -> npt.NDArray[np.bool_]:
        return np.equal(self.decision, Decision.PAY_EMERGENCY_OVERRIDE)


def outcome(decisions: Decisions) -> list[tuple[Decision, Reason]]:
    return [
        (Decision(d), Reason(r))
        for d, r in zip(decisions.decision.tolist(), decisions.reason.tolist(), strict=True)
    ]


PAY_OK = (Decision.PAY, Reason.OK)


Outcome = tuple[Decision, Reason]


def one(index: StatusIndex, code: str, date: str, emergency: bool = False, **kw: object) -> Outcome:
    return outcome(decide(index, [(code, date, emergency)], **kw))[0]  # type: ignore[arg-type]


# Rule 6 -------------------------------------------------------------------


def test_active_and_warned_are_paid(index: StatusIndex) -> None:
    assert one(index, ACTIVE, "2025-07-01") == PAY_OK
    assert one(index, WARNED, "2025-07-01") == (Decision.PAY, Reason.WARNED)
    assert one(index, WARNED, "2025-02-28") == PAY_OK  # warned from March


# §3: the status on the service date, not today -----------------------------


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ("2025-05-31", PAY_OK),  # the day before the suspension
        ("2025-06-01", (Decision.REJECT, Reason.SUSPENDED)),  # its first day
        ("2025-08-31", (Decision.REJECT, Reason.SUSPENDED)),  # its last day
        ("2025-09-01", PAY_OK),  # payable again
    ],
)
def test_suspension_boundaries(index: StatusIndex, date: str, expected: Outcome) -> None:
    assert one(index, SUSPENDED, date) == expected


def test_suspended_lines_carry_the_last_day(index: StatusIndex) -> None:
    d = decide(index, [(SUSPENDED, "2025-06-01", False), (ACTIVE, "2025-06-01", False)])
    assert d.status.tolist() == [Status.SUSPENDED, Status.ACTIVE]
    assert int(d.until_day[0]) == day("2025-08-31")


def test_terminated_from_its_date(index: StatusIndex) -> None:
    assert one(index, TERMINATED, "2025-04-30") == PAY_OK
    assert one(index, TERMINATED, "2025-05-01") == (Decision.REJECT, Reason.TERMINATED)
    assert one(index, TERMINATED, "2025-11-01") == (Decision.REJECT, Reason.TERMINATED)


# Rule 5: the emergency override -------------------------------------------


def test_emergency_overrides_a_suspension(index: StatusIndex) -> None:
    d = decide(index, [(SUSPENDED, "2025-07-01", True), (SUSPENDED, "2025-07-01", False)])
    assert outcome(d) == [
        (Decision.PAY_EMERGENCY_OVERRIDE, Reason.SUSPENDED),
        (Decision.REJECT, Reason.SUSPENDED),
    ]
    assert d.overridden.tolist() == [True, False]
    assert d.rejected == 1


def test_emergency_covers_terminated_by_default_and_by_switch(index: StatusIndex) -> None:
    assert one(index, TERMINATED, "2025-07-01", True) == (
        Decision.PAY_EMERGENCY_OVERRIDE,
        Reason.TERMINATED,
    )
    strict = Policy(emergency_covers_terminated=False)
    assert one(index, TERMINATED, "2025-07-01", True, policy=strict) == (
        Decision.REJECT,
        Reason.TERMINATED,
    )
    assert one(index, SUSPENDED, "2025-07-01", True, policy=strict) == (
        Decision.PAY_EMERGENCY_OVERRIDE,
        Reason.SUSPENDED,
    )


def test_emergency_on_a_payable_line_changes_nothing(index: StatusIndex) -> None:
    assert one(index, ACTIVE, "2025-07-01", True) == PAY_OK


# Rule 4: registered at the claim's institution -----------------------------


def test_hospital_lines_need_registration_at_the_institution(index: StatusIndex) -> None:
    assert one(index, ELSEWHERE, "2025-07-01") == (
        Decision.REJECT,
        Reason.NOT_REGISTERED_AT_INSTITUTION,
    )
    off = Policy(check_registered_at_institution=False)
    assert one(index, ELSEWHERE, "2025-07-01", policy=off) == PAY_OK


def test_rule_4_comes_before_the_emergency_override(index: StatusIndex) -> None:
    assert one(index, SUSPENDED_ELSEWHERE, "2025-07-01", True) == (
        Decision.REJECT,
        Reason.NOT_REGISTERED_AT_INSTITUTION,
    )


def test_pharmacy_lines_skip_rule_4(index: StatusIndex) -> None:
    """外配处方: the prescriber usually works at a hospital, not the pharmacy."""
    assert one(index, ELSEWHERE, "2025-07-01", institution=P1, principal=PRINCIPAL_OK) == PAY_OK


# Rule 3: unknown or registered nowhere -------------------------------------


def test_unknown_and_unregistered_practitioners(index: StatusIndex) -> None:
    assert one(index, UNKNOWN, "2025-07-01") == (Decision.REJECT, Reason.NOT_REGISTERED)
    assert one(index, DEREGISTERED, "2024-12-31") == PAY_OK  # last registered day
    assert one(index, DEREGISTERED, "2025-01-01") == (Decision.REJECT, Reason.NOT_REGISTERED)
    assert one(index, ACTIVE, "2019-12-31") == (Decision.REJECT, Reason.NOT_REGISTERED)


def test_rule_3_comes_before_rule_5(index: StatusIndex) -> None:
    d = decide(index, [(TERMINATED_DEREGISTERED, "2025-07-01", True)])
    assert outcome(d) == [(Decision.REJECT, Reason.NOT_REGISTERED)]
    assert d.status.tolist() == [Status.TERMINATED]  # the sanction is still reported


# Rule 2: malformed codes -----------------------------------------------------


def test_a_malformed_code_rejects_only_its_line(index: StatusIndex) -> None:
    d = decide(index, [("D1101", "2025-07-01", False), (ACTIVE, "2025-07-01", False)])
    assert outcome(d) == [(Decision.REJECT, Reason.INVALID_PRESCRIBER_CODE), PAY_OK]
    assert d.status.tolist() == [Status.UNSPECIFIED, Status.ACTIVE]


def test_an_empty_code_is_malformed_at_a_hospital_and_otc_at_a_pharmacy(
    index: StatusIndex,
) -> None:
    assert one(index, "", "2025-07-01") == (Decision.REJECT, Reason.INVALID_PRESCRIBER_CODE)
    assert one(index, "", "2025-07-01", institution=P1, principal=PRINCIPAL_OK) == PAY_OK


# Rule 1: the pharmacy's principal -------------------------------------------


@pytest.mark.parametrize(
    ("pharmacy", "principal", "claim_date"),
    [
        (P1, UNKNOWN, "2025-07-01"),  # unknown
        (P1, PRINCIPAL_AT_P3, "2025-07-01"),  # not registered at that pharmacy
        (P2, PRINCIPAL_SUSPENDED, "2025-07-01"),  # suspended on the claim's date
        (P4, PRINCIPAL_TERMINATED, "2025-07-01"),  # terminated
    ],
)
def test_a_principal_not_payable_rejects_every_line(
    index: StatusIndex, pharmacy: str, principal: str, claim_date: str
) -> None:
    d = decide(
        index,
        [(ACTIVE, claim_date, False), (SUSPENDED, claim_date, True), ("", claim_date, False)],
        institution=pharmacy,
        principal=principal,
        claim_date=claim_date,
    )
    # Emergency does not apply to the principal.
    assert outcome(d) == [(Decision.REJECT, Reason.PRINCIPAL_NOT_PAYABLE)] * 3


def test_a_principal_is_checked_on_the_claims_date(index: StatusIndex) -> None:
    before = decide(
        index,
        [(ACTIVE, "2025-05-31", False)],
        institution=P2,
        principal=PRINCIPAL_SUSPENDED,
        claim_date="2025-05-31",
    )
    assert outcome(before) == [PAY_OK]


def test_pharmacy_lines_still_get_rules_3_and_5(index: StatusIndex) -> None:
    d = decide(
        index,
        [
            (UNKNOWN, "2025-07-01", False),
            (SUSPENDED, "2025-07-01", False),
            ("x", "2025-07-01", False),
        ],
        institution=P1,
        principal=PRINCIPAL_OK,
    )
    assert outcome(d) == [
        (Decision.REJECT, Reason.NOT_REGISTERED),
        (Decision.REJECT, Reason.SUSPENDED),
        (Decision.REJECT, Reason.INVALID_PRESCRIBER_CODE),
    ]


def test_each_line_is_decided_on_its_own_date(index: StatusIndex) -> None:
    d = decide(
        index,
        [
            (SUSPENDED, "2025-05-31", False),
            (SUSPENDED, "2025-06-01", False),
            (ACTIVE, "2025-06-01", False),
        ],
    )
    assert outcome(d) == [PAY_OK, (Decision.REJECT, Reason.SUSPENDED), PAY_OK]
