"""The scalar fast path (``StatusIndex.lookup_line``, ``decide_line``) answers
exactly what the vectorised kernel answers, on random indexes and lines."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codes import encode_practitioner
from gateway.days import iso_to_day
from gateway.decide import KEY_EMPTY, KEY_MALFORMED, Policy, decide_line, decide_lines
from gateway.domain import Status
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
@given(
    people(),
    st.lists(line, min_size=1, max_size=12),
    st.booleans(),
    st.booleans(),
    st.integers(-1, len(INSTITUTIONS)),
    st.booleans(),
    st.booleans(),
)
def test_decide_line_equals_decide_lines(
    persons: list[Person],
    lines: list[tuple[int | str, str, bool]],
    pharmacy: bool,
    principal_ok: bool,
    institution_id: int,
    check_at_institution: bool,
    covers_terminated: bool,
) -> None:
    index = build_index(persons)
    policy = Policy(check_at_institution, covers_terminated)
    keys = [_key(which) for which, _, _ in lines]
    days = [iso_to_day(date) for _, date, _ in lines]
    emergency = [e for _, _, e in lines]
    batch = decide_lines(
        index,
        policy,
        pharmacy=pharmacy,
        institution_id=institution_id,
        principal_ok=principal_ok,
        keys=np.array(keys, dtype=np.int64),
        days=np.array(days, dtype=np.int64),
        emergency=np.array(emergency, dtype=np.bool_),
    )
    for i, (key, day, em) in enumerate(zip(keys, days, emergency, strict=True)):
        scalar = decide_line(
            index,
            policy,
            pharmacy=pharmacy,
            institution_id=institution_id,
            principal_ok=principal_ok,
            key=key,
            day=day,
            emergency=em,
        )
        vector = (
            int(batch.decision[i]),
            int(batch.reason[i]),
            int(batch.status[i]),
            int(batch.until_day[i]),
        )
        assert tuple(int(v) for v in scalar) == vector

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
