"""The index's two-level search (large batches) answers exactly what
``np.searchsorted`` answers, and large batches decide exactly as small ones."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.codes import encode_practitioner
from contract.days import iso_to_day
from contract.domain import Status
from gateway.decide import (
    KEY_EMPTY,
    KEY_MALFORMED,
    SORTED_BATCH_LINES,
    Policy,
    decide_line,
    decide_lines,
)
from gateway.index import SAMPLE_STEP, TWO_LEVEL_MIN_BATCH, _search
from tests.factory import Person, build_index
from tests.test_decide_scalar import DATES, INSTITUTIONS, STATUSES

U64 = np.uint64


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 2**50), unique=True, max_size=3 * SAMPLE_STEP),
    st.lists(st.integers(0, 2**50 + 5), min_size=TWO_LEVEL_MIN_BATCH, max_size=400),
    st.sampled_from(["left", "right"]),
)
@pytest.mark.slow
def test_two_level_search_equals_searchsorted(
    values: list[int], queries: list[int], side: str
) -> None:
    a = np.array(sorted(values), dtype=U64)
    q = np.array(queries, dtype=U64)
    # Make some queries hit entries exactly, including block boundaries.
    if len(a):
        q[: len(a) // 2] = a[: len(a) // 2]
    got = _search(a, a[::SAMPLE_STEP].copy(), q, "right" if side == "right" else "left")
    assert got.tolist() == np.searchsorted(a, q, side=side).tolist()  # type: ignore[call-overload]


def _many_people(n: int, rng: np.random.Generator) -> list[Person]:
    """``n`` practitioners with random registrations and status timelines."""
    out = []
    for i in range(n):
        registrations = []
        for _ in range(int(rng.integers(0, 4))):
            start, end = sorted(rng.choice(len(DATES), size=2, replace=False).tolist())
            open_ended = bool(rng.random() < 0.5)
            inst = INSTITUTIONS[int(rng.integers(0, len(INSTITUTIONS)))]
            registrations.append((inst, DATES[start], None if open_ended else DATES[end]))
        changes = []
        for start in sorted(set(rng.integers(0, len(DATES) - 1, size=int(rng.integers(0, 3))))):
            status = STATUSES[int(rng.integers(0, len(STATUSES)))]
            last = "2025-12-31" if status == Status.SUSPENDED else None
            changes.append((DATES[int(start)], status, last))
        out.append(Person(f"D1101{i:08d}", registrations, changes))
    return out


def test_a_large_batch_decides_like_single_lines() -> None:
    rng = np.random.default_rng(1)
    persons = _many_people(3 * SAMPLE_STEP, rng)
    index = build_index(persons)
    assert len(index) > SAMPLE_STEP and len(index.st_key) > SAMPLE_STEP
    n = SORTED_BATCH_LINES + 100  # the sorted and two-level paths both
    picks = rng.integers(-3, len(persons), size=n).tolist()
    keys = [
        KEY_MALFORMED
        if p == -1
        else KEY_EMPTY
        if p == -2
        else encode_practitioner("N110105999999" if p == -3 else persons[p].code)
        for p in picks
    ]
    days = [iso_to_day(DATES[i]) for i in rng.integers(0, len(DATES), size=n)]
    emergency = (rng.random(n) < 0.3).tolist()
    for institution_id in range(-1, len(INSTITUTIONS)):
        batch = decide_lines(
            index,
            Policy(),
            pharmacy=False,
            institution_id=institution_id,
            principal_ok=True,
            keys=np.array(keys, dtype=np.int64),
            days=np.array(days, dtype=np.int64),
            emergency=np.array(emergency, dtype=np.bool_),
        )
        for i in range(n):
            one = decide_line(
                index,
                Policy(),
                pharmacy=False,
                institution_id=institution_id,
                principal_ok=True,
                key=keys[i],
                day=days[i],
                emergency=emergency[i],
            )
            assert tuple(int(v) for v in one) == (
                int(batch.decision[i]),
                int(batch.reason[i]),
                int(batch.status[i]),
                int(batch.until_day[i]),
            )
