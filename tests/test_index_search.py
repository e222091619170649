"""The index's two-level search (large batches) answers exactly what
``np.searchsorted`` answers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.domain import Status
from gateway.index import SAMPLE_STEP, TWO_LEVEL_MIN_BATCH, _search
from tests.factory import Person
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
