"""loader.timeline: painting status intervals into change points."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.days import DAY_NONE, MAX_DAY
from contract.domain import Status
from loader.timeline import StatusChange, StatusInterval, build_timeline, status_on

A, W, S, T = Status.ACTIVE, Status.WARNED, Status.SUSPENDED, Status.TERMINATED


def iv(start: int, until: int, status: Status) -> StatusInterval:
    return StatusInterval(start, until, status)


def test_no_intervals_means_always_active() -> None:
    assert build_timeline([]) == []
    assert status_on([], 123) == StatusChange(0, A, DAY_NONE)


def test_suspension_ends_back_in_active() -> None:
    assert build_timeline([iv(10, 19, S)]) == [StatusChange(10, S, 19), StatusChange(20, A)]


def test_open_termination() -> None:
    assert build_timeline([iv(5, DAY_NONE, T)]) == [StatusChange(5, T)]


def test_leading_and_lone_active_records_give_nothing() -> None:
    assert build_timeline([iv(5, DAY_NONE, A)]) == []
    assert build_timeline([iv(5, 9, A), iv(20, 29, W)]) == [
        StatusChange(20, W),
        StatusChange(30, A),
    ]


def test_suspension_inside_termination_falls_back_to_termination() -> None:
    changes = build_timeline([iv(10, DAY_NONE, T), iv(20, 29, S)])
    assert changes == [StatusChange(10, T), StatusChange(20, S, 29), StatusChange(30, T)]


def test_later_open_record_overrides_from_its_start() -> None:
    # A suspension lifted early by an ACTIVE record.
    changes = build_timeline([iv(10, 100, S), iv(40, DAY_NONE, A)])
    assert changes == [StatusChange(10, S, 39), StatusChange(40, A)]


def test_adjacent_and_overlapping_suspensions_merge_with_the_last_end() -> None:
    assert build_timeline([iv(10, 19, S), iv(20, 29, S)]) == [
        StatusChange(10, S, 29),
        StatusChange(30, A),
    ]
    assert build_timeline([iv(10, 30, S), iv(15, 20, S)]) == [
        StatusChange(10, S, 30),
        StatusChange(31, A),
    ]


def test_earlier_record_shows_again_after_a_later_one_ends() -> None:
    changes = build_timeline([iv(10, 50, W), iv(20, 29, S)])
    assert changes == [
        StatusChange(10, W),
        StatusChange(20, S, 29),
        StatusChange(30, W),
        StatusChange(51, A),
    ]


def test_equal_starts_the_later_given_wins() -> None:
    assert build_timeline([iv(10, 19, S), iv(10, DAY_NONE, T)]) == [StatusChange(10, T)]
    assert build_timeline([iv(10, DAY_NONE, T), iv(10, 19, S)]) == [
        StatusChange(10, S, 19),
        StatusChange(20, T),
    ]


def test_input_order_does_not_matter_for_distinct_starts() -> None:
    intervals = [iv(30, 40, S), iv(10, DAY_NONE, W), iv(35, DAY_NONE, T)]
    assert build_timeline(intervals) == build_timeline(sorted(intervals, key=lambda i: i.start))


def test_edges_of_the_day_range() -> None:
    assert build_timeline([iv(0, MAX_DAY, S)]) == [StatusChange(0, S, MAX_DAY)]
    assert build_timeline([iv(MAX_DAY, MAX_DAY, T)]) == [StatusChange(MAX_DAY, T)]
    assert build_timeline([iv(0, DAY_NONE, S)]) == [StatusChange(0, S, DAY_NONE)]


@pytest.mark.parametrize(
    "bad", [iv(10, 9, S), iv(-1, 5, S), iv(MAX_DAY + 1, DAY_NONE, T), iv(5, MAX_DAY + 5, S)]
)
def test_bad_intervals_are_refused(bad: StatusInterval) -> None:
    with pytest.raises(ValueError):
        build_timeline([bad])


def test_status_on() -> None:
    changes = [StatusChange(10, S, 19), StatusChange(20, A)]
    assert status_on(changes, 9).status == A
    assert status_on(changes, 10) == StatusChange(10, S, 19)
    assert status_on(changes, 19).status == S
    assert status_on(changes, 20).status == A


# --- against a brute-force painting ---------------------------------------------

HORIZON = 60  # days 0..HORIZON-1 are painted; open ends run past it


def paint(intervals: list[StatusInterval]) -> list[Status]:
    """Day-by-day reference: records in order of start (stable), later on top."""
    days = [A] * (HORIZON + 1)
    layers = sorted(intervals, key=lambda i: i.start)  # stable: equal starts keep order
    for day in range(HORIZON + 1):
        for layer in layers:
            last = HORIZON if layer.until == DAY_NONE else layer.until
            if layer.start <= day <= last:
                days[day] = layer.status
    return days


def suspension_end(painted: list[Status], day: int) -> int:
    """Last day of the run of SUSPENDED containing ``day``; DAY_NONE if it runs off."""
    while day + 1 <= HORIZON and painted[day + 1] == S:
        day += 1
    return DAY_NONE if day == HORIZON else day


_intervals = st.builds(
    lambda start, length, status: StatusInterval(
        start, DAY_NONE if length is None else start + length, status
    ),
    st.integers(0, HORIZON - 15),  # finite ends stay inside the horizon
    st.one_of(st.none(), st.integers(0, 12)),
    st.sampled_from([A, W, S, T]),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_intervals, max_size=8))
def test_status_on_every_day_equals_brute_force_painting(intervals: list[StatusInterval]) -> None:
    changes = build_timeline(intervals)
    painted = paint(intervals)
    for day in range(HORIZON):
        got = status_on(changes, day)
        assert got.status == painted[day], day
        expected_until = suspension_end(painted, day) if painted[day] == S else DAY_NONE
        assert got.until == expected_until, day
    # The shape the index relies on: strictly increasing days, no repeated
    # status, no leading ACTIVE.
    assert all(a.day < b.day for a, b in pairwise(changes))
    assert all(a.status != b.status for a, b in pairwise(changes))
    assert not changes or changes[0].status != A
