"""Validation of one claim request into the plain values the decision kernel
takes. Pure: no gRPC, no numpy; errors name the field and the value.

A structurally bad request is refused as a whole (InvalidRequestError); a
malformed practitioner code only makes its own line INVALID_PRESCRIBER_CODE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from contract import codes
from contract.days import DateError, yyyymmdd_to_day
from contract.domain import Channel
from contract.errors import InvalidCodeError, InvalidRequestError
from gateway.decide import KEY_EMPTY, KEY_MALFORMED

MAX_CLAIM_ID_LEN = 128


class LineLike(Protocol):
    @property
    def prescriber_code(self) -> str: ...
    @property
    def service_date(self) -> int: ...
    @property
    def emergency(self) -> bool: ...
    @property
    def amount_fen(self) -> int: ...


class ClaimLike(Protocol):
    """What parse_claim reads of a CheckClaimRequest."""

    @property
    def claim_id(self) -> str: ...
    @property
    def institution_code(self) -> str: ...
    @property
    def channel(self) -> int: ...
    @property
    def principal_code(self) -> str: ...
    @property
    def service_date(self) -> int: ...

    @property
    def lines(self) -> Sequence[LineLike]: ...


@dataclass(frozen=True)
class ParsedClaim:
    pharmacy: bool
    institution_key: int
    principal_key: int  # -1 on hospital claims
    claim_day: int  # -1 when the claim carries no service_date
    keys: list[int]  # practitioner key, KEY_MALFORMED or KEY_EMPTY per line
    days: list[int]
    emergency: list[bool]


def parse_day(value: int, field: str, today_day: int) -> int:
    """Day number of a YYYYMMDD service date that is real and not in the future."""
    try:
        day = yyyymmdd_to_day(value)
    except DateError as exc:
        raise InvalidRequestError(field, f"{value} is not a real date YYYYMMDD") from exc
    if day > today_day:
        raise InvalidRequestError(field, f"{value} lies in the future")
    return day


def _key_of(code: str) -> int:
    if not code:
        return KEY_EMPTY
    # Fast path: a code longer than any valid one is refused on its length.
    if len(code) > codes.MAX_PRACTITIONER_CODE_LEN:
        return KEY_MALFORMED
    return codes.try_encode_practitioner(code)


def parse_claim(request: ClaimLike, *, max_lines: int, today_day: int) -> ParsedClaim:
    """Validate a CheckClaimRequest; raise InvalidRequestError naming the field."""
    if not request.claim_id:
        raise InvalidRequestError("claim_id", "is required")
    if len(request.claim_id) > MAX_CLAIM_ID_LEN:
        raise InvalidRequestError("claim_id", f"longer than {MAX_CLAIM_ID_LEN} characters")
    if request.channel == Channel.HOSPITAL:
        pharmacy = False
    elif request.channel == Channel.PHARMACY:
        pharmacy = True
    else:
        raise InvalidRequestError(
            "channel", f"{request.channel} is not CHANNEL_HOSPITAL or CHANNEL_PHARMACY"
        )
    try:
        institution_key = codes.encode_institution(request.institution_code)
    except InvalidCodeError as exc:
        raise InvalidRequestError("institution_code", str(exc)) from exc
    expected = "P" if pharmacy else "H"
    if request.institution_code[0] != expected:
        raise InvalidRequestError(
            "institution_code",
            f"{request.institution_code!r} is not a {'pharmacy' if pharmacy else 'hospital'}"
            f" code ({expected} + 11 digits)",
        )

    lines = request.lines
    n = len(lines)
    if n == 0:
        raise InvalidRequestError("lines", "a claim needs at least one line")
    if n > max_lines:
        raise InvalidRequestError("lines", f"{n} lines, more than the maximum of {max_lines}")

    claim_day = -1
    if request.service_date:
        claim_day = parse_day(request.service_date, "service_date", today_day)

    principal_key = -1
    if pharmacy:
        if not request.principal_code:
            raise InvalidRequestError("principal_code", "is required on a pharmacy claim")
        try:
            principal_key = codes.encode_practitioner(request.principal_code)
        except InvalidCodeError as exc:
            raise InvalidRequestError("principal_code", str(exc)) from exc
        if claim_day < 0:
            raise InvalidRequestError(
                "service_date", "is required on a pharmacy claim (the principal's check date)"
            )

    # Most claims carry one or two distinct dates and a few distinct
    # practitioners: validate and encode each once. (One pass over the lines:
    # a pass per field is slower, each pass wraps every line message again.)
    day_of: dict[int, int] = {}
    key_of: dict[str, int] = {}
    keys: list[int] = []
    days: list[int] = []
    emergency: list[bool] = []
    for i, line in enumerate(lines):
        value = line.service_date
        if value == 0:
            if claim_day < 0:
                raise InvalidRequestError(
                    f"lines[{i}].service_date", "is 0 and the claim has no service_date"
                )
            day = claim_day
        else:
            cached = day_of.get(value)
            if cached is None:
                cached = day_of[value] = parse_day(value, f"lines[{i}].service_date", today_day)
            day = cached
        if line.amount_fen < 0:  # an amount claimed, never a refund or a credit
            raise InvalidRequestError(f"lines[{i}].amount_fen", f"{line.amount_fen} is negative")
        code = line.prescriber_code
        key = key_of.get(code)
        if key is None:
            key = key_of[code] = _key_of(code)
        keys.append(key)
        days.append(day)
        emergency.append(line.emergency)
    return ParsedClaim(pharmacy, institution_key, principal_key, claim_day, keys, days, emergency)
