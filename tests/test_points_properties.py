"""Property tests of the points engine over random small ledgers (a few
practitioners, dates straddling two New Years, frequent same-day events,
cases, SCOREs with and without suspension_months, REVOKE chains, registry
records): the timelines are a pure function of the ledger, whatever the
order of its lines and whatever its event_ids (renamed by any bijection, "E9"
-> "E10" included), on the traced replay and on the vectorised fast path
alike, and keep their invariants."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract.codes import encode_practitioner
from contract.days import DAY_NONE, MAX_DAY, iso_to_day, suspension_until, year_of_day
from contract.domain import Status
from contract.errors import LoadError
from loader.points import (
    NO_CASE,
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
    months: int  # 0: no suspension_months
    target: int  # index of the revoked event, or NO_EVENT
    case: str = ""  # case_id; "" = a case of its own


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
        # Mostly with a length; without one a first suspension is an error
        # (national) and a later one is no new suspension.
        months = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 6])) if kind == Kind.SCORE else 0
        # Cases of one practitioner ("K<who><n>"), or none.
        case = draw(st.sampled_from(["", "", f"K{who}0", f"K{who}1"]))
        events.append(Ev(f"E{ids[i]:03d}", who, kind, points, day, months, target, case))
    registry = draw(
        st.lists(
            st.tuples(st.integers(0, len(KEYS) - 1), st.integers(FIRST_DAY, FIRST_DAY + 1300)),
            max_size=4,
        )
    )
    return Case(events, registry)


def ledger_of(events: list[Ev]) -> Ledger:
    n = len(events)
    names = sorted({e.case for e in events if e.case})
    number = {name: k for k, name in enumerate(names)}
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
        case=np.array([number.get(e.case, NO_CASE) for e in events], dtype=np.int64),
        case_names=names,
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


def derived(case: Case, policy: Policy = NATIONAL) -> PointsResult | None:
    """``derive``, or None when the ledger is refused (a national first
    suspension whose day has no suspension_months)."""
    try:
        return derive(case, policy)
    except LoadError as err:
        assert err.field == "suspension_months"
        return None


def timelines(result: PointsResult) -> dict[int, tuple[object, object]]:
    return {k: (result.status_changes(k), result.points_changes(k)) for k in KEYS}


def outcome(case: Case, policy: Policy, fast_path: bool = True) -> object:
    """Everything the ledger decides, comparable across line orders and ids:
    the timelines, the refused registry records, the registrations ended (by
    who and day, not by position), or the field of the error that refused it."""
    try:
        result = derive(case, policy, fast_path)
    except LoadError as err:
        return ("refused", err.field)
    registered = [(KEYS[w], d) for w, d in case.registry]
    closed = sorted(
        (*registered[row], day)
        for row, day in zip(result.closed_rows.tolist(), result.closed_on.tolist(), strict=True)
    )
    violations = sorted((v.practitioner, v.registered_on) for v in result.violations)
    return timelines(result), violations, closed


def permuted(case: Case, order: list[int]) -> Case:
    """The same ledger with its lines in another order."""
    new_index = {old: new for new, old in enumerate(order)}
    events = []
    for old in order:
        e = case.events[old]
        target = new_index[e.target] if e.target >= 0 else NO_EVENT
        events.append(Ev(e.event_id, e.who, e.kind, e.points, e.day, e.months, target, e.case))
    return Case(events, case.registry)


def renamed(case: Case, event_ids: list[str], case_ids: dict[str, str]) -> Case:
    """The same ledger with the i-th event renamed ``event_ids[i]`` and every
    case_id renamed by ``case_ids`` (REVOKEs follow: they point by index)."""
    events = [
        Ev(new, e.who, e.kind, e.points, e.day, e.months, e.target, case_ids.get(e.case, ""))
        for e, new in zip(case.events, event_ids, strict=True)
    ]
    return Case(events, case.registry)


def any_names(n: int) -> st.SearchStrategy[list[str]]:
    """n distinct ids: a permutation of "E0".."E<n-1>" without zero padding
    (so "E9" and "E10" trade places in string order), or arbitrary ones."""
    plain = st.permutations([f"E{k}" for k in range(n)])
    free = st.lists(st.from_regex(r"[A-Z]{1,2}[0-9]{0,3}", fullmatch=True), min_size=n,
                    max_size=n, unique=True)  # fmt: skip
    return st.one_of(plain, free)


@SETTINGS
@given(cases())
def test_replay_is_deterministic(case: Case) -> None:
    assert outcome(case, NATIONAL) == outcome(case, NATIONAL)


@SETTINGS
@given(cases(), st.data())
def test_renaming_event_ids_and_shuffling_lines_changes_no_timeline(
    case: Case, data: st.DataObject
) -> None:
    """Any bijection of event_ids (and of case_ids), any order of the ledger's
    lines and of the registry's: the same timelines, on the replay and on the
    fast path."""
    n = len(case.events)
    event_ids = data.draw(any_names(n))
    cases_used = sorted({e.case for e in case.events if e.case})
    new_cases = data.draw(any_names(len(cases_used)))
    other = renamed(case, event_ids, dict(zip(cases_used, new_cases, strict=True)))
    other = permuted(other, data.draw(st.permutations(range(n))))
    other = Case(other.events, data.draw(st.permutations(case.registry)))
    for policy in (NATIONAL, JIANGXI):
        expected = outcome(case, policy)
        assert outcome(other, policy) == expected
        assert outcome(other, policy, fast_path=False) == expected


@SETTINGS
@given(cases(), st.data())
def test_the_order_of_input_lines_does_not_matter(case: Case, data: st.DataObject) -> None:
    order = data.draw(st.permutations(range(len(case.events))))
    registry = data.draw(st.permutations(case.registry))
    other = permuted(case, order)
    other = Case(other.events, registry)
    for policy in (NATIONAL, JIANGXI):
        assert outcome(case, policy) == outcome(other, policy)


@SETTINGS
@given(cases())
def test_the_fast_path_agrees_with_the_replay(case: Case) -> None:
    for policy in (NATIONAL, JIANGXI):
        assert outcome(case, policy) == outcome(case, policy, fast_path=False)


@SETTINGS
@given(cases())
def test_a_termination_ends_every_registration_that_began_on_or_before_it(case: Case) -> None:
    """After the engine's closings, no registration that began on or before a
    termination day holds after that day; registrations begun later are kept."""
    result = derived(case, JIANGXI)
    assert result is not None
    ends = {row: DAY_NONE for row in range(len(case.registry))}
    ends.update(zip(result.closed_rows.tolist(), result.closed_on.tolist(), strict=True))
    for who, key in enumerate(KEYS):
        terminations = [c.day for c in result.status_changes(key) if c.status == Status.TERMINATED]
        for row, (w, start) in enumerate(case.registry):
            if w != who:
                continue
            for t in terminations:
                if start <= t:
                    assert ends[row] <= max(t, start + 1)
            if row in set(result.closed_rows.tolist()):
                assert any(start <= t for t in terminations)


@SETTINGS
@given(cases())
def test_points_never_below_zero_and_never_above_the_years_scores(case: Case) -> None:
    result = derived(case)
    if result is None:
        return
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
    result = derived(case)
    if result is None:
        return
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
    result = derived(case)
    if result is None:
        return
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
    result = derived(case)
    if result is None:
        return
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
    for policy in (NATIONAL, JIANGXI):
        assert outcome(revoked, policy) == outcome(deleted, policy)
