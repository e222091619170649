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

    def __init__(self, start: int, until: int, causes: list[str]) -> None:
        self.start = start
        self.until = until
        self.causes = causes  # the SCOREs that set its end, "E1 (ledger.csv:2)"
        self.cut: SuspensionCut | None = None  # why it ended early, if it did
        self.cut_by = ""  # what cut it: a SHORTEN's event_id or the terminating day's SCOREs


class _Termination:
    __slots__ = ("bar_end", "bar_label", "cause", "ended", "start")

    def __init__(self, start: int, bar_end: int, bar_label: str, cause: str) -> None:
        self.start = start
        self.bar_end = bar_end  # first day re-registration is allowed
        self.bar_label = bar_label  # what set it: "1-year bar (累计记满: accumulated)"
        self.cause = cause  # the events that set it, "E7 (ledger.csv:8)"
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


class _Replayer:
    """The state of one practitioner's replay, advanced one day at a time."""

    def __init__(
        self,
        policy: Policy,
        ledger_file: str,
        registry_file: str,
        practitioner: int,
        case_names: Sequence[str],
        registry: list[Item],
        facts: list[Fact] | None,
    ) -> None:
        self.policy = policy
        self.ledger_file = ledger_file
        self.registry_file = registry_file
        self.practitioner = practitioner
        self.case_names = case_names
        self.registry = registry  # the practitioner's registry records
        self.reg_end = {it[8]: it[9] for it in registry}  # row -> deregistered_on now
        self.facts = facts
        self.year = -1
        self.total = 0
        self.suspended_year = -1  # year of the last suspension triggered (rule 4)
        self.case_points: dict[tuple[int, int], int] = {}  # (case, year) -> points
        self.day_totals: list[tuple[int, int, int]] = []  # (day, year, total at day's end)
        self.suspensions: list[_Suspension] = []
        self.terminations: list[_Termination] = []
        self.term: _Termination | None = None  # the termination in force
        self.violations: list[BarViolation] = []
        self.closed: list[ClosedRegistration] = []
        self.closed_today: list[Fact] = []  # RegistrationClosed facts of the day

    # -- one day -----------------------------------------------------------

    def day(self, items: list[Item]) -> None:
        """Settle one day (rule 2): SHORTENs end what runs into the day,
        registry records count, the REPAIRs and SCOREs move the total, the
        thresholds are tested on the final total, and the SHORTENs then end
        what the day started."""
        d = items[0][0]
        shortens: list[Item] = []
        scores: list[Item] = []
        repairs: list[Item] = []
        registrations: list[Item] = []
        for it in items:
            kind = it[3]
            if kind == _SCORE:
                scores.append(it)
            elif kind == _REPAIR:
                repairs.append(it)
            elif kind == _SHORTEN:
                shortens.append(it)
            else:
                registrations.append(it)
        effects: list[ShortenEffect] = []
        if shortens:
            # Rule 10, before the day: what was running into it ends the day before.
            effects += self._shorten_running(d, shortens)
        for it in registrations:
            self._register(it)
        if scores or repairs:
            self._settle(d, items[0][6], scores, repairs)
        if shortens:
            # Rule 10, after the day: what the day started never runs.
            effects += self._shorten_started(d, shortens)
            if not effects:
                running = self.term is not None
                effects.append(
                    ShortenEffect.BAR_ALREADY_OVER if running else ShortenEffect.NOTHING_RUNNING
                )
            if self.facts is not None:
                for eid, line in sorted(((it[7], it[2]) for it in shortens), key=_first_natural):
                    self.facts.append(Shortened(d, eid, line, tuple(effects)))

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
                    term.bar_label,
                    term.cause,
                )
            )
            if self.facts is not None:
                outcome = RegistrationOutcome.INSIDE_BAR
                self.facts.append(Registered(d, line, outcome, term.bar_end))

    def _settle(self, d: int, year: int, scores: list[Item], repairs: list[Item]) -> None:
        """Rules 1, 3-7, 9: the day's REPAIRs and SCOREs together, then the
        thresholds on the day's final total."""
        if year != self.year:
            self.year, self.total = year, 0  # rule 1: the year total resets
        before = self.total
        gained = sum(it[4] for it in scores)
        repaired = sum(it[4] for it in repairs)
        after = max(0, before + gained - repaired)  # rule 9: never below 0
        self.total = after
        self._record_total(d, year, after)
        decision: Decision = NoThreshold()
        if scores:
            decision = self._thresholds(d, year, after, scores)
        if self.facts is not None:
            self._report_day(d, year, before, after, scores, repairs, decision)

    def _thresholds(self, d: int, year: int, total: int, scores: list[Item]) -> Decision:
        policy = self.policy
        # One handling (rule 6, Jiangxi's single lengths): each case's points this year.
        case_points = self.case_points
        today: dict[int, int] = {}
        for it in scores:
            key = (it[8], year)
            case_points[key] = today[it[8]] = case_points.get(key, 0) + it[4]
        term = self.term
        if term is not None:
            # Rule 7: points still add up; the bar may grow, nothing else starts.
            if total < policy.terminate_at:
                return ScoredWhileTerminated(WhileTerminated.POINTS_RECORDED, term.bar_end)
            case, points = self._largest_case(today, scores)
            bar_end = add_years(d, policy.bar_years(points))
            if bar_end <= term.bar_end:
                return ScoredWhileTerminated(WhileTerminated.BAR_ALREADY_LONGER, term.bar_end)
            term.bar_end = bar_end
            term.bar_label = self._bar_label(points, case)
            term.cause = self._causes(scores)
            return ScoredWhileTerminated(WhileTerminated.BAR_EXTENDED, bar_end)
        if total >= policy.terminate_at:
            # Rule 6: terminated; a running suspension ends the day before.
            superseded_from = -1
            running = self._running(d)
            if running is not None:
                running.until = d - 1
                running.cut, running.cut_by = SuspensionCut.SUPERSEDED, self._ids(scores)
                superseded_from = running.start
            case, points = self._largest_case(today, scores)
            years = policy.bar_years(points)
            term = _Termination(
                d, add_years(d, years), self._bar_label(points, case), self._causes(scores)
            )
            self.term = term
            self.terminations.append(term)
            self._close_registrations(d)
            return Terminated(total, points, case, years, term.bar_end, superseded_from)
        if total < policy.suspend_at:
            return NoThreshold()
        # Rule 4: in the suspension band.
        first = year != self.suspended_year
        given = [it for it in scores if it[5] != NO_MONTHS]
        if not first and not given:
            return NoNewSuspension(total, year)  # no new suspension decided: WARNED
        months_from: tuple[str, ...] = ()
        if policy.needs_event_months:
            if not given:
                self._months_required(d, year, total, scores)
            months = max(it[5] for it in given)
            months_from = tuple(sorted((it[7] for it in given if it[5] == months), key=_natural))
        else:
            months = max(policy.suspension_months(total, p, NO_MONTHS) for p in today.values())
        self.suspended_year = year
        until = suspension_until(d, months)
        running = self._running(d)
        causes = self._causes(scores)
        if running is None:
            running = _Suspension(d, until, [causes])
            self.suspensions.append(running)
            effect = SuspensionEffect.STARTED
        elif until > running.until:
            running.until = until
            running.causes.append(causes)
            running.cut, running.cut_by = None, ""
            effect = SuspensionEffect.EXTENDED
        else:
            effect = SuspensionEffect.WITHIN
        return Suspended(total, months, first, months_from, effect, running.start, running.until)

    def _shorten_running(self, d: int, shortens: list[Item]) -> list[ShortenEffect]:
        """Rule 10 for what runs into day ``d``: a suspension or a bar."""
        by = self._ids(shortens)
        term = self.term
        if term is not None:
            if d < term.bar_end:
                term.bar_end, term.bar_label = d, f"bar shortened by {by}"
                term.cause = self._causes(shortens)
                return [ShortenEffect.BAR_SHORTENED]
            return []
        running = self._running(d)
        if running is not None:
            running.until = d - 1  # it started before d: it ran
            running.cut, running.cut_by = SuspensionCut.SHORTENED, by
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
            term.bar_end = d
            term.bar_label = f"bar shortened by {self._ids(shortens)}"
            term.cause = self._causes(shortens)
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
        for it in self.registry:
            start, line, row = it[0], it[2], it[8]
            if start > d:
                continue
            ends_on = d if start < d else d + 1
            was = reg_end[row]
            if ends_on < was:
                reg_end[row] = ends_on
                self.closed.append(ClosedRegistration(row, ends_on))
                if self.facts is not None:
                    self.closed_today.append(RegistrationClosed(d, line, start, was, ends_on))

    def _largest_case(self, today: dict[int, int], scores: list[Item]) -> tuple[str, int]:
        """The case of the day with the most points this year, and its points."""
        points = max(self.case_points[(c, self.year)] for c in today)
        cases = [c for c in today if self.case_points[(c, self.year)] == points]
        return min(self._case_name(c, scores) for c in cases), points

    def _case_name(self, case: int, scores: list[Item]) -> str:
        if case >= 0:
            return self.case_names[case]
        return next(it[7] for it in scores if it[8] == case)  # a case of its own

    def _bar_label(self, case_points: int, case: str) -> str:
        return bar_label(self.policy, case_points, case)

    def _ids(self, items: list[Item]) -> str:
        return ", ".join(sorted((it[7] for it in items), key=_natural))

    def _causes(self, items: list[Item]) -> str:
        named = sorted(((it[7], it[2]) for it in items), key=_first_natural)
        return ", ".join(f"{eid} ({self.ledger_file}:{line})" for eid, line in named)

    def _months_required(self, d: int, year: int, total: int, scores: list[Item]) -> None:
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
        scores: list[Item],
        repairs: list[Item],
        decision: Decision,
    ) -> None:
        assert self.facts is not None
        ordered = sorted(repairs, key=_item_natural) + sorted(scores, key=_item_natural)
        for it in ordered:
            case = it[8]
            name = self._case_name(case, scores) if case >= 0 else ""
            self.facts.append(EventApplied(d, it[7], it[2], it[3], it[4], it[5], name))
        events = tuple((it[3], it[7]) for it in ordered)
        self.facts.append(DaySettled(d, year, before, after, events, decision))
        self.facts.extend(self.closed_today)  # what a termination of the day ended
        self.closed_today.clear()

    def result(self) -> Replay:
        if self.facts is not None:
            self.facts.extend(_endings(self.day_totals, self.suspensions, self.policy.warn_at))
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


def _first_natural(pair: tuple[str, int]) -> tuple[str | int, ...]:
    return _natural(pair[0])


def _item_natural(it: Item) -> tuple[str | int, ...]:
    return _natural(it[7])


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
    registry = [it for it in items if it[3] == _REGISTER]
    r = _Replayer(policy, ledger_file, registry_file, practitioner, case_names, registry, facts)
    n = len(items)
    i = 0
    while i < n:
        d = items[i][0]
        j = i + 1
        while j < n and items[j][0] == d:
            j += 1
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


def _endings(
    day_totals: list[tuple[int, int, int]], suspensions: list[_Suspension], warn: int
) -> list[Fact]:
    """The changes no event of their day explains: the New Year after a year
    that reached WARNED, and the end of each suspension."""
    out: list[Fact] = []
    for year in sorted({year for _, year, total in day_totals if total >= warn}):
        out.append(YearReset(jan1_day(year + 1), year + 1))
    for s in suspensions:
        out.append(SuspensionEnded(s.until + 1, s.until, tuple(s.causes), s.cut, s.cut_by))
    return out
