"""Status intervals -> the change points a snapshot stores (``st_*`` arrays).

Both sources of statuses end here: the authority's status feed
(``loader.status_feed``) and the points engine (``loader.points``). Each
gives, per practitioner, intervals ``(start, until, status)`` in day numbers
(``contract.days``), ``until`` being the LAST day the status holds or
``DAY_NONE`` for open-ended. They are painted in order of ``start``, later
starts on top:

- on any day, the status is that of the latest-starting interval covering
  that day (for equal starts, the one given last), or ACTIVE if none does;
- so a later-starting record overrides an earlier one from its start on, and
  when a record with an end date ends, the status falls back to whatever the
  earlier records say on the following day (a suspension inside a
  termination ends back in TERMINATED, not ACTIVE).

The result is a list of ``StatusChange(day, status, until)``: from ``day``
on (until the next change) the status is ``status``. Consecutive equal
statuses are merged, so ``until`` of a SUSPENDED change is the last day of the
whole merged suspension (two back-to-back suspensions read as one ending on
the second's last day); it is ``DAY_NONE`` for every other status and for a
suspension with no end. Before the first change a practitioner is ACTIVE (the
snapshot's default), so leading ACTIVE changes are dropped, and a sanction
that ends gets a change back to ACTIVE (or to the status below it).

Complexity: O(k log k) for k intervals (one sweep over the start and end days
with a heap of the intervals in force).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from contract.days import DAY_NONE, MAX_DAY
from contract.domain import Status


@dataclass(frozen=True, slots=True)
class StatusInterval:
    """``status`` holds from day ``start`` through day ``until`` (DAY_NONE = open)."""

    start: int
    until: int
    status: Status


@dataclass(frozen=True, slots=True)
class StatusChange:
    """From ``day`` on, the status is ``status``; ``until`` is a suspension's last day.

    ``until`` is ``DAY_NONE`` unless ``status`` is SUSPENDED with an end.
    """

    day: int
    status: Status
    until: int = DAY_NONE


def build_timeline(intervals: Iterable[StatusInterval]) -> list[StatusChange]:
    """Paint ``intervals`` (latest start on top) into merged change points.

    Raises ``ValueError`` for a day outside the stored range or an interval
    that ends before it starts.
    """
    ordered = sorted(enumerate(intervals), key=lambda item: (item[1].start, item[0]))
    for _, interval in ordered:
        _check(interval)
    # Every day on which the winning interval may change: a start, or the day
    # after an end. MAX_DAY + 1 (== DAY_NONE) stands for "after the range".
    boundaries = sorted(
        {i.start for _, i in ordered} | {i.until + 1 for _, i in ordered if i.until != DAY_NONE}
    )
    # Max-heap of the intervals started so far, by (start, input order);
    # ended intervals are dropped lazily when they reach the top.
    in_force: list[tuple[int, int, int, Status]] = []
    next_interval = 0
    segments: list[tuple[int, Status]] = []
    for day in boundaries:
        while next_interval < len(ordered) and ordered[next_interval][1].start == day:
            seq, interval = ordered[next_interval]
            heapq.heappush(in_force, (-interval.start, -seq, interval.until, interval.status))
            next_interval += 1
        while in_force and in_force[0][2] != DAY_NONE and in_force[0][2] < day:
            heapq.heappop(in_force)
        status = in_force[0][3] if in_force else Status.ACTIVE
        if not segments or segments[-1][1] != status:
            segments.append((day, status))
    return _changes(segments)


def _check(interval: StatusInterval) -> None:
    if not 0 <= interval.start <= MAX_DAY:
        raise ValueError(f"start day {interval.start} is outside 0..{MAX_DAY}")
    if interval.until != DAY_NONE and not interval.start <= interval.until <= MAX_DAY:
        raise ValueError(f"until day {interval.until} is before start day {interval.start}")


def _changes(segments: Sequence[tuple[int, Status]]) -> list[StatusChange]:
    """Merged segments -> change points: drop the leading ACTIVE, set suspension ends."""
    changes: list[StatusChange] = []
    for k, (day, status) in enumerate(segments):
        if day > MAX_DAY:  # the day after a status that holds through MAX_DAY
            break
        if not changes and status == Status.ACTIVE:
            continue
        until = DAY_NONE
        if status == Status.SUSPENDED and k + 1 < len(segments):
            until = segments[k + 1][0] - 1
        changes.append(StatusChange(day, status, until))
    return changes


def status_on(changes: Sequence[StatusChange], day: int) -> StatusChange:
    """The change in force on ``day`` (ACTIVE with no end before the first change).

    The reference lookup the index reproduces with arrays; used by tests and
    by callers that want one practitioner's status.
    """
    current = StatusChange(0, Status.ACTIVE, DAY_NONE)
    for change in changes:
        if change.day > day:
            break
        current = change
    return current
