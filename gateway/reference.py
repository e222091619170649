"""SPEC §3-4 in plain Python, one line at a time, with protobuf messages: the
readable statement of what the compiled claim path (``gateway/kernel.pyx``)
computes. It is the oracle of the differential tests (tests/test_kernel.py:
every response equal byte for byte) and what ``--pure-python`` serves.
No fast-path tricks: clarity over speed.
"""

from __future__ import annotations

from contract.days import DAY_NONE, day_to_yyyymmdd
from contract.domain import Decision, Status
from gateway.claims import parse_claim
from gateway.decide import Override, Policy, decide_line, principal_payable
from gateway.index import Index
from proto.eligibility.v1 import eligibility_pb2 as pb


def check_claim(
    index: Index,
    policy: Policy,
    request: pb.CheckClaimRequest,
    *,
    max_lines: int,
    today_day: int,
) -> tuple[pb.CheckClaimResponse, list[Override]]:
    """Decide every line of one claim: the response, and the emergency
    overrides in it (line index, service day, reason overridden).

    Raises ``InvalidRequestError`` naming the field of a request SPEC §3 refuses."""
    claim = parse_claim(request, max_lines=max_lines, today_day=today_day)
    institution_id = index.institution_id(claim.institution_key)
    principal_ok = claim.pharmacy and principal_payable(
        index, claim.principal_key, institution_id, claim.claim_day
    )
    response = pb.CheckClaimResponse(claim_id=request.claim_id, index_version=index.version)
    overrides: list[Override] = []
    for i, line in enumerate(request.lines):
        decision, reason, status, until_day = decide_line(
            index,
            policy,
            pharmacy=claim.pharmacy,
            institution_id=institution_id,
            principal_ok=principal_ok,
            key=claim.keys[i],
            day=claim.days[i],
            emergency=claim.emergency[i],
        )
        status_until = 0
        if status == Status.SUSPENDED and until_day != DAY_NONE:
            status_until = day_to_yyyymmdd(until_day)
        response.lines.add(
            line_id=line.line_id,
            decision=decision,  # type: ignore[arg-type]  # an int of the enum
            reason=reason,  # type: ignore[arg-type]
            status=status,  # type: ignore[arg-type]
            status_until=status_until,
        )
        if decision == Decision.REJECT:
            response.rejected_lines += 1
        if decision == Decision.PAY_EMERGENCY_OVERRIDE:
            overrides.append((i, claim.days[i], reason))
    return response, overrides
