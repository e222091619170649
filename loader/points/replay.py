"""The rules: one practitioner's events (and, after a termination, registry
records) replayed day by day into status and points change points. The
numbered rules are in the package docstring (``loader.points``); the
comments here cite them.

A day settles as one (rule 2): nothing here depends on the order of a day's
events or on their ``event_id``s, only on what the day holds. Items are
sorted by ``(day, phase, line)`` merely to group them by day.

A traced replay appends what each step did to a list of ``facts`` (plain
data, ``loader.points.facts``); the words are ``loader.points.trail``'s.
Untraced (the whole ledger), it builds no facts. O(E log E) for E events.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from contract.days import (
    DAY_NONE,
    MAX_DAY,
    add_years,
    day_to_iso,
    jan1_day,
    suspension_until,
    years_of_days,
)
from contract.domain import Status
from contract.errors import LoadError
from loader.points.facts import (
    DaySettled,
    Decision,
    EventApplied,
    Fact,
    NoNewSuspension,
    NoThreshold,
    Registered,
    RegistrationClosed,
    RegistrationOutcome,
    ScoredWhileTerminated,
    Shortened,
    ShortenEffect,
    Suspended,
    SuspensionCut,
    SuspensionEffect,
    SuspensionEnded,
    Terminated,
    WhileTerminated,
    YearReset,
)
from loader.points.types import (
    NO_CASE,
    NO_MONTHS,
    POINTS_MAX_STORED,
    BarViolation,
    ClosedRegistration,
    I64s,
    Kind,
    Ledger,
    RegistrationStarts,
    Replay,
    U64s,
)
from loader.policy import Policy
from loader.timeline import StatusChange

# Kinds as plain ints in the hot loop (IntEnum comparisons cost more).
_REGISTER, _SCORE, _REPAIR, _SHORTEN = (int(k) for k in Kind if k != Kind.REVOKE)
# Registry records of a day count before its ledger events (rule 8).
_PHASE_REGISTER, _PHASE_LEDGER = 0, 1

# (day, phase, line, kind, points, months, year, event_id, ref, until).
# ``ref``: for a ledger event its case key (the case number, or -(line + 1)
# for an event without case_id: a case of its own); for a registry record
# its row in ``RegistrationStarts``. ``until``: a registry record's
# deregistered_on (0 for events). Plain tuples sort by (day, phase, line),
# a total order that never looks at an event_id.
Item = tuple[int, int, int, int, int, int, int, str, int, int]


# --------------------------------------------------------------------------
# The replay's input: items from the ledger's and the registry's columns.


def ledger_items(ledger: Ledger, rows: I64s) -> list[Item]:
    """Replay items of ledger ``rows``, in the order given (built by zip, in C)."""
    line = ledger.line[rows]
    case = ledger.case[rows]
    event_id = ledger.event_id
    n = len(rows)
    return list(
        zip(
            ledger.effective_on[rows].tolist(),
            [_PHASE_LEDGER] * n,
            line.tolist(),
            ledger.kind[rows].tolist(),
            ledger.points[rows].tolist(),
            ledger.suspension_months[rows].tolist(),
            years_of_days(ledger.effective_on[rows]).tolist(),
            [event_id[r] for r in rows.tolist()],
            np.where(case != NO_CASE, case, -line - 1).tolist(),
            [0] * n,
            strict=True,
        )
    )


def registry_items(registrations: RegistrationStarts, keys: U64s) -> dict[int, list[Item]]:
    """Replay items of every registry record of ``keys`` (sorted), by key."""
    prac = registrations.practitioner
    if len(keys) == 0 or len(prac) == 0:
        return {}
    if np.all(prac[1:] >= prac[:-1]):
        # Fast path: a registry sorted by practitioner (as the snapshot build
        # keeps it): two binary searches per key instead of one per record.
        lo = np.searchsorted(prac, keys, side="left")
        hi = np.searchsorted(prac, keys, side="right")
        sizes = hi - lo
        starts = np.repeat(lo - np.concatenate(([0], np.cumsum(sizes)[:-1])), sizes)
        rows = (starts + np.arange(int(sizes.sum()))).astype(np.int64)
    else:
        pos = np.minimum(np.searchsorted(keys, prac), len(keys) - 1)
        rows = np.flatnonzero(keys[pos] == prac)
    days = registrations.registered_on[rows].astype(np.int64)
    out: dict[int, list[Item]] = {}
    for p, d, y, line, row, until in zip(
        prac[rows].tolist(),
        days.tolist(),
        years_of_days(days).tolist(),
        registrations.line[rows].tolist(),
        rows.tolist(),
        registrations.deregistered_on[rows].tolist(),
        strict=True,
    ):
        out.setdefault(p, []).append((d, _PHASE_REGISTER, line, _REGISTER, 0, 0, y, "", row, until))
    return out


# --------------------------------------------------------------------------
# The replay of one practitioner.


class _Suspension:
    __slots__ = ("causes", "cut", "cut_by", "start", "until")

    def __init__(self, start: int, until: int, causes: Sequence[Item]) -> None:
        self.start = start
        self.until = until
        self.causes = [causes]  # the SCOREs of each day that set its end
        self.cut: SuspensionCut | None = None  # why it ended early, if it did
        self.cut_by: Sequence[Item] = ()  # the SHORTENs or terminating SCOREs that cut it


class _Termination:
    __slots__ = ("bar_end", "case_keys", "case_points", "ended", "set_by", "shortened", "start")

    def __init__(
        self,
        start: int,
        bar_end: int,
        set_by: Sequence[Item],
        case_points: int,
        case_keys: list[int],
    ) -> None:
        self.start = start
        self.bar_end = bar_end  # first day re-registration is allowed
        # What set the bar's end: the day's SCOREs (the largest case's points
        # and its case keys decide its length), or the SHORTENs that moved it.
        self.set_by = set_by
        self.case_points = case_points
        self.case_keys = case_keys
        self.shortened = False
        self.ended: int | None = None  # re-registration day


def bar_label(policy: Policy, case_points: int, case: str) -> str:
    """The re-registration bar a termination sets, in words (a ``BarViolation``
    carries it): 一次性记满 when one case carries the termination threshold."""
    years = policy.bar_years(case_points)
    if case_points >= policy.terminate_at:
        return f"{years}-year bar (一次性记满: {case_points} points in one case, {case})"
    return f"{years}-year bar (累计记满: accumulated)"


def _natural(event_id: str) -> tuple[str | int, ...]:
    """Sort key that puts "E9" before "E10" (for the trail's wording only)."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", event_id))


def _item_natural(it: Item) -> tuple[str | int, ...]:
    return _natural(it[7])


_NO_THRESHOLD = NoThreshold()
_NO_ITEMS: tuple[Item, ...] = ()


class _Replayer:
    """The state of one practitioner's replay, advanced one day at a time.

    Untraced (the whole ledger), nothing is put into words: event ids, case
    names and causes are kept as items and formatted only for a refused
    registry record or a traced replay."""

    def __init__(
        self,
        policy: Policy,
        ledger_file: str,
        registry_file: str,
        practitioner: int,
        case_names: Sequence[str],
        facts: list[Fact] | None,
    ) -> None:
        self.policy = policy
        self.suspend_at = policy.suspend_at
        self.terminate_at = policy.terminate_at
        self.ledger_file = ledger_file
        self.registry_file = registry_file
        self.practitioner = practitioner
        self.case_names = case_names
        self.facts = facts
        self.year = -1
        self.total = 0
        self.suspended_year = -1  # year of the last suspension triggered (rule 4)
        self.seen: list[Item] = []  # the SCOREs so far (for a case's points)
        self.day_totals: list[tuple[int, int, int]] = []  # (day, year, total at day's end)
        self.suspensions: list[_Suspension] = []
        self.terminations: list[_Termination] = []
        self.term: _Termination | None = None  # the termination in force
        self.violations: list[BarViolation] = []
        self.registry: list[Item] = []  # the registry records met so far
        self.reg_end: dict[int, int] = {}  # registry row -> deregistered_on now
        self.closed: list[ClosedRegistration] = []
        self.closed_today: list[Fact] = []  # RegistrationClosed facts of the day

    # -- one day -----------------------------------------------------------

    def day(self, items: Sequence[Item]) -> None:
        """Settle one day (rule 2): SHORTENs end what runs into the day,
        registry records count, the REPAIRs and SCOREs move the total, the
        thresholds are tested on the final total, and the SHORTENs then end
        what the day started."""
        if len(items) == 1:
            # Fast path: a day of one SCORE or REPAIR (most days).
            it = items[0]
            if it[3] == _SCORE:
                self._settle(it[0], it[6], items, _NO_ITEMS, it[4], 0)
                return
            if it[3] == _REPAIR:
                self._settle(it[0], it[6], _NO_ITEMS, items, 0, it[4])
                return
        d = items[0][0]
        shortens: list[Item] = []
        scores: list[Item] = []
        repairs: list[Item] = []
        registrations: list[Item] = []
        gained = repaired = 0
        for it in items:
            kind = it[3]
            if kind == _SCORE:
                scores.append(it)
                gained += it[4]
            elif kind == _REPAIR:
                repairs.append(it)
                repaired += it[4]
            elif kind == _SHORTEN:
                shortens.append(it)
            else:
                registrations.append(it)
        effects: list[ShortenEffect] = []
        if shortens:
            # Rule 10, before the day: what was running into it ends the day before.
            effects += self._shorten_running(d, shortens)
        for it in registrations:
            self.registry.append(it)
            self.reg_end[it[8]] = it[9]
            self._register(it)
        if scores or repairs:
            self._settle(d, items[0][6], scores, repairs, gained, repaired)
        if shortens:
            # Rule 10, after the day: what the day started never runs.
            effects += self._shorten_started(d, shortens)
            if not effects:
                running = self.term is not None
                effects.append(
                    ShortenEffect.BAR_ALREADY_OVER if running else ShortenEffect.NOTHING_RUNNING
                )
            if self.facts is not None:
                for it in sorted(shortens, key=_item_natural):
                    self.facts.append(Shortened(d, it[7], it[2], tuple(effects)))

    def _register(self, it: Item) -> None:
        """Rule 8: a registration on or after the bar ends the termination."""
        d, line = it[0], it[2]
        term = self.term
        if term is None:
            # A first registration, another institution, or one after the
            # re-registration: nothing to do with the points rules.
            if self.facts is not None and self.terminations:
                outcome = RegistrationOutcome.ALREADY_REREGISTERED
                self.facts.append(Registered(d, line, outcome, DAY_NONE))
            return
        if d >= term.bar_end:
            term.ended, self.term = d, None
            # A fresh start: the total and the year's suspension count from 0.
            self.year, self.total, self.suspended_year = it[6], 0, -1
            self._record_total(d, self.year, 0)
            if self.facts is not None:
                outcome = RegistrationOutcome.REREGISTERED
                self.facts.append(Registered(d, line, outcome, DAY_NONE))
        else:
            self.violations.append(
                BarViolation(
                    self.practitioner,
                    self.registry_file,
                    line,
                    d,
                    term.start,
                    term.bar_end,
                    self._bar_label(term),
                    self._causes(term.set_by),
                )
            )
            if self.facts is not None:
                outcome = RegistrationOutcome.INSIDE_BAR
                self.facts.append(Registered(d, line, outcome, term.bar_end))

    def _settle(
        self,
        d: int,
        year: int,
        scores: Sequence[Item],
        repairs: Sequence[Item],
        gained: int,
        repaired: int,
    ) -> None:
        """Rules 1, 3-7, 9: the day's REPAIRs and SCOREs together (``gained``
        and ``repaired`` are their sums), then the thresholds on the day's
        final total."""
        if year != self.year:
            self.year, self.total = year, 0  # rule 1: the year total resets
        before = self.total
        after = before + gained - repaired
        if after < 0:
            after = 0  # rule 9: never below 0
        self.total = after
        totals = self.day_totals
        if totals and totals[-1][0] == d:
            totals[-1] = (d, year, after)
        else:
            totals.append((d, year, after))
        decision: Decision = _NO_THRESHOLD
        if scores:
            self.seen.extend(scores)
            if self.term is not None or after >= self.suspend_at:
                decision = self._thresholds(d, year, after, scores)
        if self.facts is not None:
            self._report_day(d, year, before, after, scores, repairs, decision)

    def _thresholds(self, d: int, year: int, total: int, scores: Sequence[Item]) -> Decision:
        policy = self.policy
        term = self.term
        if term is not None:
            # Rule 7: points still add up; the bar may grow, nothing else starts.
            if total < self.terminate_at:
                return ScoredWhileTerminated(WhileTerminated.POINTS_RECORDED, term.bar_end)
            points, keys = self._largest_case(scores, year)
            bar_end = add_years(d, policy.bar_years(points))
            if bar_end <= term.bar_end:
                return ScoredWhileTerminated(WhileTerminated.BAR_ALREADY_LONGER, term.bar_end)
            term.bar_end, term.set_by, term.shortened = bar_end, scores, False
            term.case_points, term.case_keys = points, keys
            return ScoredWhileTerminated(WhileTerminated.BAR_EXTENDED, bar_end)
        if total >= self.terminate_at:
            # Rule 6: terminated; a running suspension ends the day before.
            superseded_from = -1
            running = self._running(d)
            if running is not None:
                running.until = d - 1
                running.cut, running.cut_by = SuspensionCut.SUPERSEDED, scores
                superseded_from = running.start
            points, keys = self._largest_case(scores, year)
            years = policy.bar_years(points)
            term = _Termination(d, add_years(d, years), scores, points, keys)
            self.term = term
            self.terminations.append(term)
            self._close_registrations(d)
            case = self._case_name(term) if self.facts is not None else ""
            return Terminated(total, points, case, years, term.bar_end, superseded_from)
        # Rule 4: in the suspension band (the caller checked total >= suspend).
        first = year != self.suspended_year
        given = [it for it in scores if it[5] != NO_MONTHS]
        if not first and not given:
            return NoNewSuspension(total, year)  # no new suspension decided: WARNED
        months_from: tuple[str, ...] = ()
        if policy.needs_event_months:
            if not given:
                self._months_required(d, year, total, scores)
            months = max(it[5] for it in given)
            if self.facts is not None:
                chosen = [it[7] for it in given if it[5] == months]
                months_from = tuple(sorted(chosen, key=_natural))
        else:
            months = max(
                policy.suspension_months(total, p, NO_MONTHS)
                for p in self._case_points(scores, year).values()
            )
        self.suspended_year = year
        until = suspension_until(d, months)
        running = self._running(d)
        if running is None:
            running = _Suspension(d, until, scores)
            self.suspensions.append(running)
            effect = SuspensionEffect.STARTED
        elif until > running.until:
            running.until = until
            running.causes.append(scores)
            running.cut, running.cut_by = None, ()
            effect = SuspensionEffect.EXTENDED
        else:
            effect = SuspensionEffect.WITHIN
        return Suspended(total, months, first, months_from, effect, running.start, running.until)

    def _shorten_running(self, d: int, shortens: list[Item]) -> list[ShortenEffect]:
        """Rule 10 for what runs into day ``d``: a suspension or a bar."""
        term = self.term
        if term is not None:
            if d < term.bar_end:
                term.bar_end, term.set_by, term.shortened = d, shortens, True
                return [ShortenEffect.BAR_SHORTENED]
            return []
        running = self._running(d)
        if running is not None:
            running.until = d - 1  # it started before d: it ran
            running.cut, running.cut_by = SuspensionCut.SHORTENED, shortens
            return [ShortenEffect.SUSPENSION_SHORTENED]
        return []

    def _shorten_started(self, d: int, shortens: list[Item]) -> list[ShortenEffect]:
        """Rule 10 for what day ``d`` started: a suspension never runs; a
        termination's bar ends the day before (re-registration allowed from d)."""
        suspensions = self.suspensions
        if suspensions and suspensions[-1].start == d:
            suspensions.pop()
            return [ShortenEffect.SUSPENSION_CANCELLED]
        term = self.term
        if term is not None and term.start == d and d < term.bar_end:
            term.bar_end, term.set_by, term.shortened = d, shortens, True
            return [ShortenEffect.BAR_SHORTENED]
        return []

    # -- helpers -------------------------------------------------------------

    def _running(self, d: int) -> _Suspension | None:
        s = self.suspensions
        return s[-1] if s and s[-1].until >= d else None

    def _record_total(self, d: int, year: int, total: int) -> None:
        totals = self.day_totals
        if totals and totals[-1][0] == d:
            totals[-1] = (d, year, total)
        else:
            totals.append((d, year, total))

    def _close_registrations(self, d: int) -> None:
        """A termination on ``d`` ends every registration that began on or
        before ``d`` and still holds on it. One that began on ``d`` itself
        ends the day after (a period is never empty; TERMINATED that day)."""
        reg_end = self.reg_end
        for it in self.registry:  # the records met so far: all begun on or before d
            start, line, row = it[0], it[2], it[8]
            ends_on = d if start < d else d + 1
            was = reg_end[row]
            if ends_on < was:
                reg_end[row] = ends_on
                self.closed.append(ClosedRegistration(row, ends_on))
                if self.facts is not None:
                    self.closed_today.append(RegistrationClosed(d, line, start, was, ends_on))

    def _case_points(self, scores: Sequence[Item], year: int) -> dict[int, int]:
        """Points this year so far of each case that scored today (one handling, 一次)."""
        points = {it[8]: 0 for it in scores}
        for it in self.seen:
            if it[6] == year and it[8] in points:
                points[it[8]] += it[4]
        return points

    def _largest_case(self, scores: Sequence[Item], year: int) -> tuple[int, list[int]]:
        """The most points one case of the day carries this year, and the
        cases that carry them."""
        points = self._case_points(scores, year)
        most = max(points.values())
        return most, [c for c, p in points.items() if p == most]

    def _case_name(self, term: _Termination) -> str:
        """The case that set the bar: its case_id, or the event_id of a case
        of its own (the first in natural order among ties)."""
        names = [
            self.case_names[c] if c >= 0 else next(it[7] for it in term.set_by if it[8] == c)
            for c in term.case_keys
        ]
        return min(names, key=_natural)

    def _bar_label(self, term: _Termination) -> str:
        if term.shortened:
            return f"bar shortened by {self._ids(term.set_by)}"
        return bar_label(self.policy, term.case_points, self._case_name(term))

    def _ids(self, items: Sequence[Item]) -> str:
        return ", ".join(sorted((it[7] for it in items), key=_natural))

    def _causes(self, items: Sequence[Item]) -> str:
        named = sorted(items, key=_item_natural)
        return ", ".join(f"{it[7]} ({self.ledger_file}:{it[2]})" for it in named)

    def _months_required(self, d: int, year: int, total: int, scores: Sequence[Item]) -> None:
        ids = self._ids(scores)
        if len(scores) == 1:
            what = f"event {ids} brings"
        else:
            what = f"events {ids} of {day_to_iso(d)} bring"
        raise LoadError(
            self.ledger_file,
            min(it[2] for it in scores),
            "suspension_months",
            f"required by policy {self.policy.name!r}: {what} the {year} total to {total} "
            f"(suspension from {self.policy.suspend_at}), the first suspension of {year}",
        )

    def _report_day(
        self,
        d: int,
        year: int,
        before: int,
        after: int,
        scores: Sequence[Item],
        repairs: Sequence[Item],
        decision: Decision,
    ) -> None:
        assert self.facts is not None
        ordered = sorted(repairs, key=_item_natural) + sorted(scores, key=_item_natural)
        for it in ordered:
            name = self.case_names[it[8]] if it[8] >= 0 else ""
            self.facts.append(EventApplied(d, it[7], it[2], it[3], it[4], it[5], name))
        events = tuple((it[3], it[7]) for it in ordered)
        self.facts.append(DaySettled(d, year, before, after, events, decision))
        self.facts.extend(self.closed_today)  # what a termination of the day ended
        self.closed_today.clear()

    def _endings(self) -> list[Fact]:
        """The changes no event of their day explains: the New Year after a
        year that reached WARNED, and the end of each suspension."""
        warn = self.policy.warn_at
        out: list[Fact] = []
        for year in sorted({year for _, year, total in self.day_totals if total >= warn}):
            out.append(YearReset(jan1_day(year + 1), year + 1))
        for s in self.suspensions:
            causes = tuple(self._causes(day) for day in s.causes)
            cut_by = self._ids(s.cut_by)
            out.append(SuspensionEnded(s.until + 1, s.until, causes, s.cut, cut_by))
        return out

    def result(self) -> Replay:
        if self.facts is not None:
            self.facts.extend(self._endings())
        changes = _status_changes(
            self.day_totals, self.suspensions, self.terminations, self.policy.warn_at
        )
        return Replay(
            changes,
            _points_changes(self.day_totals),
            self.violations,
            bool(self.terminations),
            self.closed,
        )


def replay_items(
    items: list[Item],
    policy: Policy,
    ledger_file: str,
    registry_file: str,
    practitioner: int,
    facts: list[Fact] | None = None,
    case_names: Sequence[str] = (),
) -> Replay:
    """Replay one practitioner's items (sorted by day) under ``policy``, one
    day at a time. With a ``facts`` list, append to it what every step did,
    then the endings. ``case_names`` (the ledger's) name cases in the bar's
    label."""
    r = _Replayer(policy, ledger_file, registry_file, practitioner, case_names, facts)
    n = len(items)
    i = 0
    while i < n:
        d = items[i][0]
        j = i + 1
        while j < n and items[j][0] == d:
            j += 1
        if j == i + 1 and items[i][3] == _SCORE:
            # Fast path: a day of one SCORE (most days) settles as that SCORE.
            it = items[i]
            r._settle(d, it[6], (it,), _NO_ITEMS, it[4], 0)
        else:
            r.day(items[i:j])
        i = j
    return r.result()


def _points_changes(day_totals: list[tuple[int, int, int]]) -> list[tuple[int, int]]:
    """Rule 12: keep the days whose total differs from what a lookup would
    read without them (the previous kept point in the same year, else 0)."""
    out: list[tuple[int, int]] = []
    last_year, last_total = -1, 0
    for day, year, total in day_totals:
        implied = last_total if year == last_year else 0
        if total != implied and day <= MAX_DAY:
            out.append((day, min(total, POINTS_MAX_STORED)))
            last_year, last_total = year, total
    return out


def _status_changes(
    day_totals: list[tuple[int, int, int]],
    suspensions: list[_Suspension],
    terminations: list[_Termination],
    warn: int,
) -> list[StatusChange]:
    """Turn the replay's intervals and day totals into status change points:
    evaluate the status on every day something may change, in one merge pass."""
    if not suspensions and not terminations:
        return _warned_changes(day_totals, warn)
    candidates: list[int] = []
    for day, year, total in day_totals:
        candidates.append(day)
        if total >= warn:
            candidates.append(jan1_day(year + 1))  # WARNED ends with the year
    # Suspensions that touch or overlap form one run with the run's last day.
    runs: list[list[int]] = []
    for s in suspensions:
        if runs and s.start <= runs[-1][1] + 1:
            runs[-1][1] = max(runs[-1][1], s.until)
        else:
            runs.append([s.start, s.until])
        candidates.append(s.start)
        candidates.append(s.until + 1)
    for t in terminations:
        candidates.append(t.start)
        if t.ended is not None:
            candidates.append(t.ended)

    changes: list[StatusChange] = []
    prev_status, prev_until = Status.ACTIVE, DAY_NONE
    j, r, n_totals, n_runs = -1, 0, len(day_totals), len(runs)
    for c in sorted(set(candidates)):
        if c > MAX_DAY:
            break
        while j + 1 < n_totals and day_totals[j + 1][0] <= c:
            j += 1
        while r < n_runs and runs[r][1] < c:
            r += 1
        until = DAY_NONE
        if terminations and any(
            t.start <= c and (t.ended is None or c < t.ended) for t in terminations
        ):
            status = Status.TERMINATED
        elif r < n_runs and runs[r][0] <= c:
            status, until = Status.SUSPENDED, min(runs[r][1], MAX_DAY)
        else:
            # The last day total, if it is of c's year (else the year reset it to 0).
            in_year = j >= 0 and c < jan1_day(day_totals[j][1] + 1)
            total = day_totals[j][2] if in_year else 0
            status = Status.WARNED if total >= warn else Status.ACTIVE
        if status != prev_status or until != prev_until:
            changes.append(StatusChange(c, status, until))
            prev_status, prev_until = status, until
    return changes


def _warned_changes(day_totals: list[tuple[int, int, int]], warn: int) -> list[StatusChange]:
    """Fast path of ``_status_changes`` without suspension or termination:
    WARNED from a day whose total is >= ``warn`` until a day below it or
    the New Year, whichever comes first; ACTIVE otherwise."""
    changes: list[StatusChange] = []
    warned = False
    n = len(day_totals)
    for k, (day, year, total) in enumerate(day_totals):
        if day > MAX_DAY:
            break
        if (total >= warn) != warned:
            warned = not warned
            changes.append(StatusChange(day, Status.WARNED if warned else Status.ACTIVE))
        if warned:
            new_year = jan1_day(year + 1)
            if (k + 1 == n or day_totals[k + 1][0] > new_year) and new_year <= MAX_DAY:
                changes.append(StatusChange(new_year, Status.ACTIVE))
                warned = False
    return changes
