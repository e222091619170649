"""The decision rules of SPEC §4 for one line, in plain Python: the readable
statement of the rules (``gateway.reference`` applies them to a claim) that
the compiled claim path (``gateway/kernel.pyx``) must agree with byte for
byte (tests/test_kernel.py). No gRPC, no Redis.
"""

from __future__ import annotations

from dataclasses import dataclass

from contract.days import DAY_NONE
from contract.domain import Decision, Reason, Status
from gateway.index import Index

# The key of a line whose practitioner code is malformed, or empty.
KEY_MALFORMED = -1
KEY_EMPTY = -2


@dataclass(frozen=True)
class Policy:
    """The policy switches of SPEC §4."""

    # Rule 4: a hospital line's practitioner must be registered at the
    # claim's institution on the service date.
    check_registered_at_institution: bool = True
    # Rule 5: the emergency exception also covers TERMINATED practitioners.
    emergency_covers_terminated: bool = True


# An emergency override in a decided claim: (line index, service day, reason overridden).
Override = tuple[int, int, int]


def principal_payable(index: Index, principal_key: int, institution_id: int, day: int) -> bool:
    """Rule 1: the pharmacy's principal is known, registered at that pharmacy on
    ``day``, and neither suspended nor terminated (emergency never applies)."""
    _, at_institution, status, _ = index.lookup_line(
        index.row_of(principal_key), day, institution_id
    )
    return at_institution and status not in (Status.SUSPENDED, Status.TERMINATED)


# One line's verdict: (decision, reason, status, until_day).
LineDecision = tuple[int, int, int, int]
_PAY_OK: LineDecision = (Decision.PAY, Reason.OK, Status.UNSPECIFIED, DAY_NONE)


def decide_line(
    index: Index,
    policy: Policy,
    *,
    pharmacy: bool,
    institution_id: int,
    principal_ok: bool,
    key: int,
    day: int,
    emergency: bool,
) -> LineDecision:
    """One line's verdict: rules 1-6 tried in SPEC order, the first that applies decides.

    ``key`` is the practitioner key (contract.codes), ``KEY_MALFORMED`` for a
    malformed code and ``KEY_EMPTY`` for an empty one; ``institution_id`` is
    the claim institution's row in the index (-1 if no one is registered
    there); ``principal_ok`` is rule 1's verdict (ignored on hospital claims).
    """
    if key >= 0:
        registered, at_inst, status, until = index.lookup_line(
            index.row_of(key), day, institution_id
        )
    else:
        registered, at_inst, status, until = False, False, Status.UNSPECIFIED, DAY_NONE
    if pharmacy and not principal_ok:  # rule 1
        return Decision.REJECT, Reason.PRINCIPAL_NOT_PAYABLE, status, until
    if key < 0:  # rule 2
        if key == KEY_EMPTY and pharmacy:
            return _PAY_OK
        return Decision.REJECT, Reason.INVALID_PRESCRIBER_CODE, status, until
    if not registered:  # rule 3
        return Decision.REJECT, Reason.NOT_REGISTERED, status, until
    if not pharmacy and policy.check_registered_at_institution and not at_inst:  # rule 4
        return Decision.REJECT, Reason.NOT_REGISTERED_AT_INSTITUTION, status, until
    if status == Status.SUSPENDED or status == Status.TERMINATED:  # rule 5
        reason = Reason.SUSPENDED if status == Status.SUSPENDED else Reason.TERMINATED
        covered = status == Status.SUSPENDED or policy.emergency_covers_terminated
        decision = Decision.PAY_EMERGENCY_OVERRIDE if emergency and covered else Decision.REJECT
        return decision, reason, status, until
    if status == Status.WARNED:  # rule 6
        return Decision.PAY, Reason.WARNED, status, until
    return Decision.PAY, Reason.OK, status, until
