"""On random indexes and lines: the index's one-line lookup answers what its
batch lookup answers, and the compiled claim path what the reference does."""

from __future__ import annotations

from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.codes import encode_practitioner
from contract.days import iso_to_day
from contract.domain import Status
from gateway import servicer as servicer_module
from gateway.claimpath import PurePath
from gateway.decide import KEY_EMPTY, KEY_MALFORMED, Policy
from gateway.index import IndexHolder
from gateway.servicer import EligibilityServicer
from proto.eligibility.v1 import eligibility_pb2 as pb
from tests.factory import Person, build_index

CODES = [f"D1101050000{i:02d}" for i in range(6)]
INSTITUTIONS = ["H11010500001", "H11010500002", "P11010500001"]
DATES = ["2025-01-01", "2025-03-01", "2025-06-01", "2025-09-01", "2025-12-31"]
STATUSES = [Status.ACTIVE, Status.WARNED, Status.SUSPENDED, Status.TERMINATED]


@st.composite
def people(draw: st.DrawFn) -> list[Person]:
    out = []
    for code in draw(st.lists(st.sampled_from(CODES), unique=True, max_size=len(CODES))):
        registrations = []
        for _ in range(draw(st.integers(0, 3))):
            start, end = sorted(draw(st.lists(st.sampled_from(DATES), min_size=2, max_size=2)))
            open_ended = draw(st.booleans()) or start == end
            registrations.append(
                (draw(st.sampled_from(INSTITUTIONS)), start, None if open_ended else end)
            )
        changes = []
        for start in sorted(draw(st.sets(st.sampled_from(DATES[:-1]), max_size=3))):
            status = draw(st.sampled_from(STATUSES))
            changes.append((start, status, "2025-12-31" if status == Status.SUSPENDED else None))
        out.append(Person(code, registrations, changes))
    return out


line = st.tuples(
    st.sampled_from([*range(len(CODES)), "unknown", "malformed", "empty"]),
    st.sampled_from([*DATES, "2024-12-31", "2026-01-01"]),
    st.booleans(),
)


def _key(which: int | str) -> int:
    if which == "malformed":
        return KEY_MALFORMED
    if which == "empty":
        return KEY_EMPTY
    if which == "unknown":
        return encode_practitioner("N110105999999")
    assert isinstance(which, int)
    return encode_practitioner(CODES[which])


@settings(max_examples=300, deadline=None)
@given(people(), st.lists(line, min_size=1, max_size=12), st.integers(-1, len(INSTITUTIONS)))
@pytest.mark.slow
def test_lookup_line_equals_lookup(
    persons: list[Person], lines: list[tuple[int | str, str, bool]], institution_id: int
) -> None:
    """The index's two lookups (one line; a batch, for the ops tools) agree."""
    index = build_index(persons)
    for which, date, _ in lines:
        key, day = _key(which), iso_to_day(date)
        rows = index.rows(np.array([key], dtype=np.int64))
        assert index.row_of(key) == int(rows[0])
        found = index.lookup(rows, np.array([day], dtype=np.int64), institution_id)
        assert index.lookup_line(int(rows[0]), day, institution_id) == (
            bool(found.registered[0]),
            bool(found.at_institution[0]),
            int(found.status[0]),
            int(found.until[0]),
        )


def test_an_empty_index_answers_the_scalar_path_too() -> None:
    index = build_index([])
    assert index.row_of(12345) == -1
    assert index.lookup_line(-1, 100, -1) == (False, False, int(Status.NOT_REGISTERED), 0xFFFF)


@settings(max_examples=150, deadline=None)
@given(
    people(),
    st.lists(line, min_size=1, max_size=30),
    st.booleans(),
    st.sampled_from(INSTITUTIONS),
    st.sampled_from([*CODES, "N110105999999"]),
)
def test_the_compiled_path_answers_what_the_reference_answers(
    persons: list[Person],
    lines: list[tuple[int | str, str, bool]],
    pharmacy: bool,
    institution: str,
    principal: str,
) -> None:
    """The compiled claim path (gateway.kernel) and the reference
    (gateway.reference, --pure-python) give byte-identical responses."""
    holder = IndexHolder()
    holder.swap(build_index(persons, version=3))
    compiled = EligibilityServicer(holder, Policy(), max_lines_per_claim=100, overrides=_Sink())
    reference = EligibilityServicer(
        holder,
        Policy(),
        max_lines_per_claim=100,
        overrides=_Sink(),
        path=PurePath(Policy(), 100),
    )
    codes = {"unknown": "N110105999999", "malformed": "D1101-BAD", "empty": ""}
    request = pb.CheckClaimRequest(
        claim_id="C-1",
        institution_code=("P" if pharmacy else "H") + institution[1:],
        channel=pb.CHANNEL_PHARMACY if pharmacy else pb.CHANNEL_HOSPITAL,
        principal_code=principal if pharmacy else "",
        service_date=20251231,
        lines=[
            pb.ClaimLine(
                line_id=str(i),
                prescriber_code=CODES[which] if isinstance(which, int) else codes[which],
                service_date=int(date.replace("-", "")),
                emergency=emergency,
            )
            for i, (which, date, emergency) in enumerate(lines)
        ],
    )
    today = iso_to_day("2026-01-01")
    assert _check(compiled, request, today) == _check(reference, request, today)


class _Sink:
    def record(self, *args: object) -> None:
        return None


def _check(servicer: EligibilityServicer, request: pb.CheckClaimRequest, today: int) -> bytes:
    with patch.object(servicer_module, "today_day", lambda: today):
        return servicer.check_claim(request).SerializeToString()
