"""Property tests of the points engine over random small ledgers (a few
practitioners, dates straddling two New Years, frequent same-day events,
REVOKE chains, registry records): the timelines are a pure function of the
ledger, whatever the order of its lines, and keep their invariants."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract.codes import encode_practitioner
from contract.days import DAY_NONE, MAX_DAY, iso_to_day, suspension_until, year_of_day
from contract.domain import Status
from loader.points import (
    NO_EVENT,
    Kind,
    Ledger,
    PointsResult,
    RegistrationStarts,
    derive_statuses,
    resolve_revocations,
)
from loader.policy import Policy, load_policy

KEYS = [encode_practitioner(c) for c in ("D110105000001", "HY110105000002", "HJ110105000003")]
FIRST_DAY = iso_to_day("2023-10-01")
NATIONAL = load_policy("national")
JIANGXI = load_policy("jiangxi")
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Ev:
    event_id: str
    who: int  # index into KEYS
    kind: Kind
    points: int
    day: int
    months: int
    target: int  # index of the revoked event, or NO_EVENT


@dataclass(frozen=True)
class Case:
    events: list[Ev]
    registry: list[tuple[int, int]]  # (who, registered_on)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    n = draw(st.integers(0, 24))
    ids = draw(st.permutations(range(n)))
    kinds = [Kind.SCORE] * 6 + [Kind.REPAIR, Kind.SHORTEN, Kind.REVOKE]
    events: list[Ev] = []
    for i in range(n):
        who = draw(st.integers(0, len(KEYS) - 1))
        kind = draw(st.sampled_from(kinds))
        # 41 possible days 13 apart: same-day events are frequent, and the
        # range crosses 1 January twice.
        day = FIRST_DAY + 13 * draw(st.integers(0, 40))
        earlier = [j for j, e in enumerate(events) if e.who == who]
        target = NO_EVENT
        if kind == Kind.REVOKE:
            if not earlier:
                kind = Kind.SCORE
            else:
                target = draw(st.sampled_from(earlier))  # earlier rows only: no cycles
        points = draw(st.integers(1, 12)) if kind in (Kind.SCORE, Kind.REPAIR) else 0
        months = draw(st.integers(1, 6)) if kind == Kind.SCORE else 0
        events.append(Ev(f"E{ids[i]:03d}", who, kind, points, day, months, target))
    registry = draw(
        st.lists(
            st.tuples(st.integers(0, len(KEYS) - 1), st.integers(FIRST_DAY, FIRST_DAY + 1300)),
            max_size=4,
        )
    )
    return Case(events, registry)


def ledger_of(events: list[Ev]) -> Ledger:
    n = len(events)
    return Ledger(
        file="ledger.csv",
        event_id=[e.event_id for e in events],
        practitioner=np.array([KEYS[e.who] for e in events], dtype=np.uint64),
        institution=np.full(n, 811010500001, dtype=np.uint64),
        kind=np.array([e.kind for e in events], dtype=np.uint8),
        points=np.array([e.points for e in events], dtype=np.uint16),
        effective_on=np.array([e.day for e in events], dtype=np.uint16),
        suspension_months=np.array([e.months for e in events], dtype=np.uint8),
        reference=[events[e.target].event_id if e.target >= 0 else "" for e in events],
        revokes=np.array([e.target for e in events], dtype=np.int64),
        line=np.arange(2, n + 2, dtype=np.int64),
    )


def registry_of(registry: list[tuple[int, int]]) -> RegistrationStarts:
    return RegistrationStarts(
        "registry.csv",
        np.array([KEYS[w] for w, _ in registry], dtype=np.uint64),
        np.array([d for _, d in registry], dtype=np.uint16),
        np.arange(2, len(registry) + 2, dtype=np.int64),
    )


def derive(case: Case, policy: Policy = NATIONAL, fast_path: bool = True) -> PointsResult:
    return derive_statuses(
        ledger_of(case.events),
        policy,
        registry_of(case.registry),
        check_registry=False,
        fast_path=fast_path,
    )


def timelines(result: PointsResult) -> dict[int, tuple[object, object]]:
    return {k: (result.status_changes(k), result.points_changes(k)) for k in KEYS}


def permuted(case: Case, order: list[int]) -> Case:
    """The same ledger with its lines in another order."""
    new_index = {old: new for new, old in enumerate(order)}
    events = []
    for old in order:
        e = case.events[old]
        target = new_index[e.target] if e.target >= 0 else NO_EVENT
        events.append(Ev(e.event_id, e.who, e.kind, e.points, e.day, e.months, target))
    return Case(events, case.registry)


@SETTINGS
@given(cases())
def test_replay_is_deterministic(case: Case) -> None:
    assert timelines(derive(case)) == timelines(derive(case))


@SETTINGS
@given(cases(), st.data())
def test_the_order_of_input_lines_does_not_matter(case: Case, data: st.DataObject) -> None:
    order = data.draw(st.permutations(range(len(case.events))))
    registry = data.draw(st.permutations(case.registry))
    other = permuted(case, order)
    other = Case(other.events, registry)
    for policy in (NATIONAL, JIANGXI):
        a, b = derive(case, policy), derive(other, policy)
        assert timelines(a) == timelines(b)
        assert {(v.practitioner, v.registered_on) for v in a.violations} == {
            (v.practitioner, v.registered_on) for v in b.violations
        }


@SETTINGS
@given(cases())
def test_the_fast_path_agrees_with_the_replay(case: Case) -> None:
    for policy in (NATIONAL, JIANGXI):
        assert timelines(derive(case, policy)) == timelines(derive(case, policy, False))


@SETTINGS
@given(cases())
def test_points_never_below_zero_and_never_above_the_years_scores(case: Case) -> None:
    result = derive(case)
    in_effect = resolve_revocations(ledger_of(case.events))
    for who, key in enumerate(KEYS):
        scored: dict[int, int] = {}
        for e, ok in zip(case.events, in_effect, strict=True):
            if ok and e.who == who and e.kind == Kind.SCORE:
                year = year_of_day(e.day)
                scored[year] = scored.get(year, 0) + e.points
        for day, total in result.points_changes(key):
            assert 0 <= total <= scored.get(year_of_day(day), 0)


@SETTINGS
@given(cases())
def test_no_effective_events_means_no_change_points(case: Case) -> None:
    result = derive(case)
    in_effect = resolve_revocations(ledger_of(case.events))
    for who, key in enumerate(KEYS):
        if not any(ok and e.who == who for e, ok in zip(case.events, in_effect, strict=True)):
            assert result.status_changes(key) == []
            assert result.points_changes(key) == []
    assert result.status_changes(encode_practitioner("D999999999999")) == []


@SETTINGS
@given(cases())
def test_timeline_invariants(case: Case) -> None:
    """Days strictly increase, consecutive points differ, ``until`` only on
    SUSPENDED and the next point is the day after it, and ACTIVE/WARNED agree
    with the published points total (WARNED iff >= 6 that year)."""
    result = derive(case)
    for key in KEYS:
        changes = result.status_changes(key)
        points = result.points_changes(key)
        pdays = [d for d, _ in points]
        for i, c in enumerate(changes):
            assert c.status in (Status.ACTIVE, Status.WARNED, Status.SUSPENDED, Status.TERMINATED)
            nxt = changes[i + 1] if i + 1 < len(changes) else None
            if nxt is not None:
                assert nxt.day > c.day and (nxt.status, nxt.until) != (c.status, c.until)
            if c.status == Status.SUSPENDED:
                assert c.day <= c.until <= MAX_DAY
                assert (nxt.day if nxt else MAX_DAY + 1) == c.until + 1 or c.until == MAX_DAY
            else:
                assert c.until == DAY_NONE
            if c.status in (Status.ACTIVE, Status.WARNED):
                j = bisect.bisect_right(pdays, c.day) - 1
                same_year = j >= 0 and year_of_day(pdays[j]) == year_of_day(c.day)
                total = points[j][1] if same_year else 0
                assert (c.status == Status.WARNED) == (total >= NATIONAL.warn_at)


@SETTINGS
@given(cases())
def test_every_suspension_lasts_1_to_6_months_unless_shortened(case: Case) -> None:
    """A SUSPENDED run starts on an effective SCORE's day and ends on the last
    day of an effective SCORE's own 1-6 month period, unless a SHORTEN or a
    termination cut it: then it ends the day before one of them."""
    result = derive(case)
    in_effect = resolve_revocations(ledger_of(case.events))
    for who, key in enumerate(KEYS):
        mine = [e for e, ok in zip(case.events, in_effect, strict=True) if ok and e.who == who]
        scores = [e for e in mine if e.kind == Kind.SCORE]
        cuts = {e.day for e in mine if e.kind == Kind.SHORTEN}
        changes = result.status_changes(key)
        cuts |= {c.day for c in changes if c.status == Status.TERMINATED}
        for c in changes:
            if c.status != Status.SUSPENDED:
                continue
            assert any(e.day == c.day for e in scores)
            ends = {suspension_until(e.day, e.months) for e in scores if c.day <= e.day <= c.until}
            assert c.until in ends or c.until + 1 in cuts
            if c.until + 1 not in cuts:
                assert suspension_until(c.day, 1) <= c.until


@SETTINGS
@given(cases(), st.data())
def test_revoking_an_event_is_the_same_as_deleting_it(case: Case, data: st.DataObject) -> None:
    scores = [i for i, e in enumerate(case.events) if e.kind == Kind.SCORE]
    if not scores:
        return
    i = data.draw(st.sampled_from(scores))
    if any(e.target == i for e in case.events):
        return  # already revoked (or reinstated) by the case itself
    victim = case.events[i]
    revoke = Ev("ZZZ", victim.who, Kind.REVOKE, 0, victim.day, 0, i)
    revoked = Case([*case.events, revoke], case.registry)
    kept = [j for j in range(len(case.events)) if j != i]
    deleted = permuted(case, kept)
    assert timelines(derive(revoked)) == timelines(derive(deleted))
