"""The points engine (驾照式记分): scoring ledger + policy -> status timelines.

Pure: no I/O, no clock. The same ledger gives the same timelines whatever the
order of its lines, and ``replay_practitioner`` says which events produced
which status (``loader.explain`` formats it).

Entry point: ``derive_statuses(ledger, policy, registrations)`` returns a
``PointsResult``: for every practitioner with ledger rows, the status change
points (``loader.timeline.StatusChange(day, status, until)``: the status holds
from ``day`` until the next point; ``until`` is the last day of a suspension,
DAY_NONE otherwise; before the first point the practitioner is ACTIVE) and
the points change points ``(day, year total from that day)``. They come as CSR
arrays (``status_rows()`` / ``points_rows()`` flatten them for the snapshot's
``st_*`` / ``pt_*``) and as dicts for ``loader.build.build_arrays``
(``timelines()`` / ``points_timelines()``). It raises ``LoadError`` for a
registry record inside a re-registration bar (``check_reregistrations``) and
for a ledger the rules cannot replay.

The rules (SPEC §7), with every interpretation chosen where the SPEC is silent:

1.  Points add up per calendar year by ``effective_on`` and reset on 1 January.
    Points from all institutions add up on the one person.
2.  Order. A practitioner's events are replayed by ``(effective_on, event_id)``
    (event ids compared as plain strings), never by file order. Within one
    day: SHORTEN events first (they end what was running *before* that day),
    then registry records (a re-registration counts from the start of its day),
    then SCORE and REPAIR events in event-id order, each checked against the
    thresholds as it is applied.
3.  WARNED: the status whenever the year total is >= ``warn`` (6) and no
    suspension or termination is in force; this includes the rest of a year
    after a suspension has ended with the total still >= 6 (>= 9 included: the
    person stays on notice). On 1 January the total is 0 and WARNED ends.
4.  SUSPENDED: *every* SCORE that leaves the year total in the suspension band
    (9..11) suspends from its ``effective_on`` for M calendar months
    (national: the event's ``suspension_months``, required on such an event;
    Jiangxi: by the year total after the event, or by the event's own points
    when it alone carries >= 9, whichever is longer). M months from day D
    cover D up to, not including, D + M months, the day clamped to the
    month's end: ``until`` is the day before. A new suspension while one is
    running never stacks and never shortens it: the running one is extended
    to the later of the two ends (a union of intervals). So a further SCORE
    that leaves the total at 9..11, during or after a suspension, suspends
    again or restarts the clock when its own period ends later. Suspensions
    that touch or overlap are published as one change point whose ``until``
    is the last day of the whole run. When a suspension ends, the status is
    WARNED or ACTIVE by the year total of that day.
5.  A suspension running across 31 December continues: the year total resets
    to 0 on 1 January, the suspension does not.
6.  TERMINATED: a SCORE that leaves the year total >= 12 terminates from its
    ``effective_on``, also while suspended: the running suspension is
    superseded and ends the day before (one starting that same day never
    runs). Re-registration is barred from the termination day for 1 year
    (accumulated, 累计记满) or 3 years (the terminating event alone carries
    >= 12 points, 一次性记满); 29 February + 1 year is 28 February.
7.  While TERMINATED, SCOREs still add points; one that leaves the year
    total >= 12 again extends the bar to the later of the two ends (computed
    from its own effective_on and its own points); no suspension starts while
    terminated.
8.  Re-registration: the first registry record whose ``registered_on`` is on
    or after the end of the bar ends the termination that day; the person is
    ACTIVE with a year total of 0 from then (the points that terminated them
    have been sanctioned; a points change point records the reset). A record
    with ``registered_on`` after the termination day but inside the bar is an
    error (``check_reregistrations``, naming the bar, its end and the event
    that set it). Records on or before the termination day are earlier
    registrations (registry records count before same-day events) and change
    nothing.
9.  REPAIR subtracts its points from ``effective_on`` on, never below zero and
    never retroactively; it never ends a suspension or a termination. A REPAIR
    larger than the total leaves 0. A REPAIR in a later year than the points
    it was meant for has nothing to subtract (the year already reset).
10. SHORTEN ends the suspension running on ``effective_on`` the day before, or,
    while TERMINATED, moves the end of the re-registration bar to
    ``effective_on`` (the termination itself lasts until re-registered). It
    never lengthens anything; with nothing running it does nothing (recorded
    in the trail: the suspension may have been revoked since).
11. REVOKE removes the event named by its ``reference`` and everything is
    replayed without it; the REVOKE's own date plays no part (the appeal says
    the event never happened). A REVOKE of a REVOKE reinstates the original
    event (that appeal decision was itself overturned), and so on down the
    chain. Several REVOKEs of one event are allowed. A REVOKE of an unknown
    event, of another practitioner's event, of itself, or in a cycle is a
    ``LoadError``.
12. Points change points: one per day on which the year total changes, with
    the day's final total. No entry is written for 1 January: a lookup that
    finds a point of an earlier year reads 0 (``contract.snapshot`` documents
    it and ``StatusIndex.points_on`` does it). Totals above 65535 are stored
    as 65535 (impossible in practice with <= 12 points an event).
13. A practitioner with no event in effect has no change points (ACTIVE).
    Days past ``contract.days.MAX_DAY`` (2149-06-05) are not represented: a
    suspension ``until`` beyond it is stored as MAX_DAY.

Performance: rows are grouped per practitioner with one numpy argsort. The
common case, a practitioner with a single event in effect (a SCORE below 12,
a lone REPAIR or SHORTEN), is done for all of them at once with numpy (Fast
path); the others are replayed in plain Python, one practitioner at a time
(O(E log E) for their E events). Registry records are looked up only for the
practitioners the first replay terminated, which are then replayed again with
them. 1M events over 15M practitioners: about 3.5 s on the 2-core dev machine.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from contract.days import DAY_NONE, MAX_DAY, day_to_date
from contract.domain import Status
from contract.errors import LoadError
from loader.policy import Policy
from loader.timeline import StatusChange

U8s = npt.NDArray[np.uint8]
U16s = npt.NDArray[np.uint16]
U64s = npt.NDArray[np.uint64]
I64s = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
NO_MONTHS = 0  # suspension_months column: not given
NO_EVENT = -1  # revokes column: not a REVOKE
POINTS_MAX_STORED = 0xFFFF


class Kind(IntEnum):
    """Ledger event kinds. ``REGISTER`` is internal: a registry record merged
    into a practitioner's replay."""

    REGISTER = 0
    SCORE = 1
    REPAIR = 2
    SHORTEN = 3
    REVOKE = 4


@dataclass(frozen=True, eq=False)
class Ledger:
    """The scoring ledger as columns, one row per line of the file, in file
    order. Built by ``loader.ledger`` (which validates every field)."""

    file: str
    event_id: Sequence[str]
    practitioner: U64s  # contract.codes practitioner keys
    institution: U64s  # contract.codes institution keys
    kind: U8s  # Kind
    points: U16s  # 0 where the kind carries none
    effective_on: U16s  # contract.days day numbers
    suspension_months: U8s  # NO_MONTHS where not given
    reference: Sequence[str]  # the reference text as written
    revokes: I64s  # for a REVOKE: row of the event it revokes; NO_EVENT otherwise
    line: I64s  # line number in ``file``

    def __post_init__(self) -> None:
        n = len(self.event_id)
        for name in (
            "practitioner",
            "institution",
            "kind",
            "points",
            "effective_on",
            "suspension_months",
            "reference",
            "revokes",
            "line",
        ):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"ledger column {name} has {len(getattr(self, name))} rows, not {n}"
                )

    def __len__(self) -> int:
        return len(self.event_id)

    def __repr__(self) -> str:
        # A million-row ledger must not print itself into a traceback.
        return f"Ledger({self.file!r}, {len(self)} rows)"


class RegistryColumns(Protocol):
    """The registry columns the re-registration rules read (``loader.registry.Registry``)."""

    @property
    def file(self) -> str: ...
    @property
    def practitioner(self) -> U64s: ...
    @property
    def registered_on(self) -> npt.NDArray[np.uint16]: ...
    @property
    def lines(self) -> I64s: ...


@dataclass(frozen=True, eq=False)
class RegistrationStarts:
    """Registry records reduced to what the re-registration rules need: who,
    ``registered_on`` (day number) and where in which file."""

    file: str
    practitioner: U64s
    registered_on: npt.NDArray[np.integer[Any]]
    line: I64s

    def __repr__(self) -> str:
        return f"RegistrationStarts({self.file!r}, {len(self.practitioner)} records)"

    @classmethod
    def from_registry(cls, registry: RegistryColumns) -> RegistrationStarts:
        """From ``loader.registry.Registry`` (or anything with those columns)."""
        return cls(registry.file, registry.practitioner, registry.registered_on, registry.lines)

    @classmethod
    def empty(cls, file: str = "<no registry>") -> RegistrationStarts:
        return cls(file, np.zeros(0, np.uint64), np.zeros(0, np.uint16), np.zeros(0, np.int64))


@dataclass(frozen=True)
class TrailEntry:
    """One step of a replay, for explanations: what happened on ``day``."""

    day: int
    source: str  # "file:line" of the ledger event or registry record; "" if derived
    event_id: str  # "" for registry records and derived steps
    text: str


@dataclass(frozen=True)
class BarViolation:
    """A registry record whose ``registered_on`` falls inside a re-registration bar."""

    practitioner: int
    registry_file: str
    registry_line: int
    registered_on: int
    terminated_on: int
    bar_end: int  # first day re-registration is allowed
    bar_label: str
    cause: str  # the event that set the bar's end, "E7 (ledger.csv:8)"

    def error(self) -> LoadError:
        last = day_to_date(self.bar_end - 1).isoformat()
        return LoadError(
            self.registry_file,
            self.registry_line,
            "registered_on",
            f"{day_to_date(self.registered_on).isoformat()} is inside the re-registration "
            f"bar after the termination on {day_to_date(self.terminated_on).isoformat()} "
            f"by {self.cause}: {self.bar_label}, barred until {last} "
            f"(re-registration allowed from {day_to_date(self.bar_end).isoformat()})",
        )


@dataclass(frozen=True)
class Replay:
    """One practitioner's replay: the timelines and, if traced, the trail."""

    status_changes: list[StatusChange]
    points_changes: list[tuple[int, int]]
    violations: list[BarViolation]
    trail: list[TrailEntry] = field(default_factory=list)
    # For each status change point, the trail entries of its day that caused it.
    causes: list[list[TrailEntry]] = field(default_factory=list)
    terminated: bool = False


@dataclass(frozen=True, eq=False)
class PointsResult:
    """Timelines of every practitioner with ledger rows, as CSR arrays:
    practitioner ``practitioners[i]`` has status change points
    ``st_*[st_offsets[i]:st_offsets[i+1]]`` and points change points
    ``pt_*[pt_offsets[i]:pt_offsets[i+1]]``, each in increasing day order."""

    policy: str
    practitioners: U64s  # sorted practitioner keys
    st_offsets: I64s
    st_day: U16s
    st_status: U8s
    st_until: U16s
    pt_offsets: I64s
    pt_day: U16s
    pt_points: U16s
    violations: tuple[BarViolation, ...] = ()

    def _row(self, key: int) -> int:
        pos = int(np.searchsorted(self.practitioners, np.uint64(key)))
        if pos < len(self.practitioners) and int(self.practitioners[pos]) == key:
            return pos
        return -1

    def status_changes(self, key: int) -> list[StatusChange]:
        """The practitioner's status change points ([] = ACTIVE throughout)."""
        row = self._row(key)
        if row < 0:
            return []
        lo, hi = int(self.st_offsets[row]), int(self.st_offsets[row + 1])
        return [
            StatusChange(int(d), Status(int(s)), int(u))
            for d, s, u in zip(
                self.st_day[lo:hi], self.st_status[lo:hi], self.st_until[lo:hi], strict=True
            )
        ]

    def points_changes(self, key: int) -> list[tuple[int, int]]:
        """The practitioner's ``(day, year total from that day)`` points."""
        row = self._row(key)
        if row < 0:
            return []
        lo, hi = int(self.pt_offsets[row]), int(self.pt_offsets[row + 1])
        return [
            (int(d), int(p)) for d, p in zip(self.pt_day[lo:hi], self.pt_points[lo:hi], strict=True)
        ]

    def timelines(self) -> dict[int, list[StatusChange]]:
        """Status change points by practitioner key, for ``loader.build``;
        practitioners with none (ACTIVE throughout) are left out."""
        out: dict[int, list[StatusChange]] = {}
        off = self.st_offsets.tolist()
        rows = zip(
            self.st_day.tolist(), self.st_status.tolist(), self.st_until.tolist(), strict=True
        )
        status_of = {int(s): s for s in Status}  # faster than Status(s) a million times
        changes = [StatusChange(d, status_of[s], u) for d, s, u in rows]
        for i, key in enumerate(self.practitioners.tolist()):
            if off[i] != off[i + 1]:
                out[key] = changes[off[i] : off[i + 1]]
        return out

    def points_timelines(self) -> dict[int, list[tuple[int, int]]]:
        """Points change points by practitioner key, for ``loader.build``;
        practitioners with none are left out."""
        out: dict[int, list[tuple[int, int]]] = {}
        off = self.pt_offsets.tolist()
        points = list(zip(self.pt_day.tolist(), self.pt_points.tolist(), strict=True))
        for i, key in enumerate(self.practitioners.tolist()):
            if off[i] != off[i + 1]:
                out[key] = points[off[i] : off[i + 1]]
        return out

    def status_rows(self) -> tuple[U64s, U16s, U8s, U16s]:
        """Flat status change points: (practitioner key, day, status, until),
        sorted by key then day; map keys to snapshot rows with searchsorted."""
        keys = np.repeat(self.practitioners, np.diff(self.st_offsets))
        return keys, self.st_day, self.st_status, self.st_until

    def points_rows(self) -> tuple[U64s, U16s, U16s]:
        """Flat points change points: (practitioner key, day, year total)."""
        keys = np.repeat(self.practitioners, np.diff(self.pt_offsets))
        return keys, self.pt_day, self.pt_points


# --------------------------------------------------------------------------
# Calendar arithmetic on day numbers (plain ints: bar ends may pass MAX_DAY).


def _date(day: int) -> dt.date:
    return dt.date.fromordinal(_EPOCH_ORDINAL + day)


def _day(date: dt.date) -> int:
    return date.toordinal() - _EPOCH_ORDINAL


def _iso(day: int) -> str:
    # Bar ends may lie past MAX_DAY; a Python date still names them.
    return _date(day).isoformat()


def add_months(day: int, months: int) -> int:
    """The day ``months`` calendar months after ``day``, clamped to the month's
    end: 2023-01-31 + 1 month = 2023-02-28."""
    date = _date(day)
    y, m = divmod(date.month - 1 + months, 12)
    year, month = date.year + y, m + 1
    next_first = dt.date(year + (month == 12), month % 12 + 1, 1)
    last_mday = (next_first - dt.timedelta(days=1)).day
    return _day(dt.date(year, month, min(date.day, last_mday)))


def add_years(day: int, years: int) -> int:
    """The same date ``years`` later; 29 February becomes 28 February."""
    date = _date(day)
    try:
        return _day(date.replace(year=date.year + years))
    except ValueError:
        return _day(date.replace(year=date.year + years, day=28))


def suspension_until(day: int, months: int) -> int:
    """Last day of a suspension of ``months`` months from ``day`` (SPEC §7:
    from 31 January, 1 month covers 31 Jan .. 27 Feb; payable on 28 Feb)."""
    return add_months(day, months) - 1


def add_months_array(days: I64s, months: I64s) -> I64s:
    """``add_months`` vectorised (numpy calendar months, same clamping)."""
    d64 = days.astype("datetime64[D]")
    month = d64.astype("datetime64[M]")
    day_of_month = (d64 - month.astype("datetime64[D]")).astype(np.int64)  # 0-based
    target = month + months.astype("timedelta64[M]")
    first = target.astype("datetime64[D]")
    length = ((target + np.timedelta64(1, "M")).astype("datetime64[D]") - first).astype(np.int64)
    result: I64s = (first + np.minimum(day_of_month, length - 1)).astype(np.int64)
    return result


def _years_of(days: npt.NDArray[Any]) -> I64s:
    """Calendar year of each day number, vectorised."""
    years: I64s = days.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970
    return years


def _jan1_of(years: I64s) -> I64s:
    """Day number of 1 January of each year, vectorised."""
    days: I64s = (years - 1970).astype("datetime64[Y]").astype("datetime64[D]").astype(np.int64)
    return days


# 1 January of the years 1970..2151, index = year - 1970: every day number
# (up to 2149-06-05) and the New Year after it.
_JAN1: list[int] = [_day(dt.date(y, 1, 1)) for y in range(1970, 2152)]


def _jan1(year: int) -> int:
    return _JAN1[year - 1970]


# --------------------------------------------------------------------------
# REVOKE resolution.


def resolve_revocations(ledger: Ledger) -> Bools:
    """Which rows are in effect: a row is revoked when a REVOKE in effect names
    it. REVOKE rows themselves are never replayed (their mask is False).
    Raise ``LoadError`` for a REVOKE of nothing, of itself, of another
    practitioner's event, or in a cycle."""
    n = len(ledger)
    kind = ledger.kind
    in_effect: Bools = np.asarray(kind != Kind.REVOKE, dtype=np.bool_)
    revoke_rows = np.flatnonzero(~in_effect).tolist()
    if not revoke_rows:
        return in_effect
    target_of: dict[int, int] = {}
    for r in revoke_rows:
        t = int(ledger.revokes[r])
        where = (ledger.file, int(ledger.line[r]), "reference")
        if not 0 <= t < n:
            raise LoadError(
                *where,
                f"REVOKE {ledger.event_id[r]}: {ledger.reference[r]!r} "
                "names no event in the ledger",
            )
        if t == r:
            raise LoadError(*where, f"REVOKE {ledger.event_id[r]} revokes itself")
        if ledger.practitioner[t] != ledger.practitioner[r]:
            raise LoadError(
                *where,
                f"REVOKE {ledger.event_id[r]} is for another practitioner than "
                f"{ledger.event_id[t]} (line {int(ledger.line[t])})",
            )
        target_of[r] = t
    # A cycle can only run through REVOKE rows (each names exactly one row).
    done: set[int] = set()
    for start in revoke_rows:
        path: list[int] = []
        on_path: set[int] = set()
        node = start
        while node in target_of and node not in done:
            if node in on_path:
                cycle = [*path[path.index(node) :], node]
                ids = " -> ".join(ledger.event_id[c] for c in cycle)
                first = min(cycle, key=lambda c: int(ledger.line[c]))
                raise LoadError(
                    ledger.file, int(ledger.line[first]), "reference", f"REVOKE cycle: {ids}"
                )
            path.append(node)
            on_path.add(node)
            node = target_of[node]
        done.update(path)
    revokers: dict[int, list[int]] = {}
    for r, t in target_of.items():
        revokers.setdefault(t, []).append(r)
    # effective(x) = no effective REVOKE names x; the graph is acyclic now.
    effective: dict[int, bool] = {}
    for t in revokers:
        stack = [t]
        while stack:
            node = stack[-1]
            if node in effective:
                stack.pop()
                continue
            pending = [r for r in revokers.get(node, ()) if r not in effective]
            if pending:
                stack.extend(pending)
                continue
            effective[node] = not any(effective[r] for r in revokers.get(node, ()))
            stack.pop()
    revoked = [t for t, ok in effective.items() if not ok and kind[t] != Kind.REVOKE]
    in_effect[revoked] = False
    return in_effect


# --------------------------------------------------------------------------
# The replay of one practitioner.

# Kinds as plain ints in the hot loop (IntEnum comparisons cost more).
_REGISTER, _SCORE, _REPAIR, _SHORTEN = (int(k) for k in Kind if k != Kind.REVOKE)
# The order within a day: SHORTENs, then registry records, then SCORE/REPAIR.
_PHASE_SHORTEN, _PHASE_REGISTER, _PHASE_POINTS = 0, 1, 2

# (day, phase, event_id, kind, points, months, year, line). Plain tuples sort
# by (day, phase, event_id): event ids are unique, so that order is total for
# events; registry records ("" as event id) then sort by line.
_Item = tuple[int, int, str, int, int, int, int, int]


class _Suspension:
    __slots__ = ("causes", "end_note", "start", "until")

    def __init__(self, start: int, until: int, cause: tuple[str, int]) -> None:
        self.start = start
        self.until = until
        self.causes = [cause]  # (event_id, line) of each event that set its end
        self.end_note = ""  # why it ended early (traced replays only)


class _Termination:
    __slots__ = ("bar_end", "bar_points", "cause", "ended", "start")

    def __init__(self, start: int, bar_end: int, bar_points: int, cause: tuple[str, int]) -> None:
        self.start = start
        self.bar_end = bar_end  # first day re-registration is allowed
        self.bar_points = bar_points  # points of the event that set the bar; 0 = shortened
        self.cause = cause  # (event_id, line) of that event
        self.ended: int | None = None  # re-registration day


def _replay(
    items: list[_Item],
    policy: Policy,
    ledger_file: str,
    registry_file: str,
    practitioner: int,
    trace: bool,
) -> Replay:
    """Replay one practitioner's sorted items; see the module docstring.
    With ``trace`` it also records the trail (the plain replay builds no text)."""
    warn, suspend, terminate = policy.warn_at, policy.suspend_at, policy.terminate_at
    year = -1
    total = 0
    day_totals: list[tuple[int, int, int]] = []  # (day, year, total at the end of day)
    suspensions: list[_Suspension] = []
    terminations: list[_Termination] = []
    term: _Termination | None = None  # the termination in force
    violations: list[BarViolation] = []
    trail: list[TrailEntry] = []

    def cause_text(cause: tuple[str, int]) -> str:
        return f"{cause[0]} ({ledger_file}:{cause[1]})"

    def note(day: int, event_id: str, line: int, text: str) -> None:
        src = ledger_file if event_id else registry_file
        trail.append(TrailEntry(day, f"{src}:{line}", event_id, text))

    for d, _, eid, kind, points, months, item_year, line in items:
        if kind in (_SCORE, _REPAIR):
            if item_year != year:
                year, total = item_year, 0  # 1 January: a new calendar year starts at 0
            before = total
            total = total + points if kind == _SCORE else max(0, total - points)
            if day_totals and day_totals[-1][0] == d:
                day_totals[-1] = (d, year, total)
            else:
                day_totals.append((d, year, total))
            if trace:
                sign = "+" if kind == _SCORE else "-"
                name = Kind(kind).name
                note(d, eid, line, f"{name} {sign}{points}: {year} total {before} -> {total}")
            if kind == _REPAIR:
                continue
            if term is not None:
                if total >= terminate:
                    bar_end = add_years(d, policy.bar_years(points))
                    if bar_end > term.bar_end:
                        term.bar_end, term.bar_points, term.cause = bar_end, points, (eid, line)
                        if trace:
                            note(
                                d,
                                eid,
                                line,
                                f"already TERMINATED; total >= {terminate} "
                                f"again: re-registration barred until {_iso(bar_end - 1)}",
                            )
                    elif trace:
                        note(d, eid, line, "already TERMINATED; the bar already runs longer")
                elif trace:
                    note(d, eid, line, "already TERMINATED; points recorded")
            elif total >= terminate:
                if suspensions and suspensions[-1].until >= d:
                    cut = suspensions[-1]
                    cut.until = d - 1
                    if trace:
                        cut.end_note = f"superseded by the termination by {eid}"
                    if cut.until < cut.start:
                        suspensions.pop()  # it started today: it never ran
                term = _Termination(d, add_years(d, policy.bar_years(points)), points, (eid, line))
                terminations.append(term)
                if trace:
                    note(
                        d,
                        eid,
                        line,
                        f"total {total} >= {terminate}: TERMINATED until "
                        f"re-registered; {policy.bar_label(points)}, re-registration "
                        f"allowed from {_iso(term.bar_end)}",
                    )
            elif total >= suspend:
                if policy.needs_event_months and months == NO_MONTHS:
                    raise LoadError(
                        ledger_file,
                        line,
                        "suspension_months",
                        f"required by policy {policy.name!r}: event {eid} brings "
                        f"the {year} total to {total} (suspension from {suspend})",
                    )
                months = policy.suspension_months(total, points, months)
                until = suspension_until(d, months)
                running = suspensions[-1] if suspensions and suspensions[-1].until >= d else None
                if running is None:
                    suspensions.append(_Suspension(d, until, (eid, line)))
                    what = "SUSPENDED {} .. {}"
                elif until > running.until:
                    running.until = until  # a union: extended to the later end
                    running.causes.append((eid, line))
                    running.end_note = ""
                    what = "the running suspension (from {}) now ends {}"
                else:
                    what = "within the running suspension (from {}), which ends {}"
                if trace:
                    start, end = (running or suspensions[-1]).start, suspensions[-1].until
                    what = what.format(_iso(start), _iso(end))
                    note(d, eid, line, f"total {total} >= {suspend}: {months} month(s) -> {what}")
        elif kind == _SHORTEN:
            running = suspensions[-1] if suspensions and suspensions[-1].until >= d else None
            if term is not None:
                if d < term.bar_end:
                    term.bar_end, term.bar_points, term.cause = d, 0, (eid, line)
                    what = f"re-registration bar ends {_iso(d - 1)}"
                else:
                    what = "the re-registration bar is already over: nothing to shorten"
            elif running is not None:
                running.until = d - 1  # start < d: SHORTENs come first within a day
                if trace:
                    running.end_note = f"shortened by {eid}"
                what = f"the suspension ends {_iso(d - 1)}"
            else:
                what = "no suspension or bar running: nothing to shorten"
            if trace:
                note(d, eid, line, f"SHORTEN: {what}")
        elif kind == _REGISTER:
            if term is None:
                # A first registration, another institution, or one after the
                # re-registration: nothing to do with the points rules.
                if trace and terminations:
                    note(d, "", line, "registry record: already re-registered")
                continue
            if d >= term.bar_end:
                term.ended, term = d, None
                year, total = item_year, 0
                if day_totals and day_totals[-1][0] == d:
                    day_totals[-1] = (d, year, 0)
                else:
                    day_totals.append((d, year, 0))
                if trace:
                    note(d, "", line, "re-registered: the termination ends, year total reset to 0")
            else:
                if term.bar_points:
                    label = policy.bar_label(term.bar_points)
                else:
                    label = f"bar shortened by {term.cause[0]}"
                violations.append(
                    BarViolation(
                        practitioner,
                        registry_file,
                        line,
                        d,
                        term.start,
                        term.bar_end,
                        label,
                        cause_text(term.cause),
                    )
                )
                if trace:
                    note(
                        d,
                        "",
                        line,
                        "registry record inside the re-registration bar "
                        f"(barred until {_iso(term.bar_end - 1)}): refused",
                    )

    changes = _render(day_totals, suspensions, terminations, warn)
    causes: list[list[TrailEntry]] = []
    if trace:
        derived = _derived_notes(day_totals, suspensions, warn, cause_text)
        causes = [[e for e in trail if e.day == c.day] + derived.get(c.day, []) for c in changes]
    return Replay(
        changes, _points_changes(day_totals), violations, trail, causes, bool(terminations)
    )


def _points_changes(day_totals: list[tuple[int, int, int]]) -> list[tuple[int, int]]:
    """Keep the days whose total differs from what a lookup would read
    without them (the previous kept point in the same year, else 0)."""
    out: list[tuple[int, int]] = []
    last_year, last_total = -1, 0
    for day, year, total in day_totals:
        implied = last_total if year == last_year else 0
        if total != implied and day <= MAX_DAY:
            out.append((day, min(total, POINTS_MAX_STORED)))
            last_year, last_total = year, total
    return out


def _render(
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
            candidates.append(_jan1(year + 1))  # WARNED ends with the year
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
            in_year = j >= 0 and c < _jan1(day_totals[j][1] + 1)
            total = day_totals[j][2] if in_year else 0
            status = Status.WARNED if total >= warn else Status.ACTIVE
        if status != prev_status or until != prev_until:
            changes.append(StatusChange(c, status, until))
            prev_status, prev_until = status, until
    return changes


def _derived_notes(
    day_totals: list[tuple[int, int, int]],
    suspensions: list[_Suspension],
    warn: int,
    cause_text: Callable[[tuple[str, int]], str],
) -> dict[int, list[TrailEntry]]:
    """Trail entries for changes no event of the day explains: New Year, the
    end of a suspension."""
    derived: dict[int, list[TrailEntry]] = {}

    def add(day: int, text: str) -> None:
        derived.setdefault(day, []).append(TrailEntry(day, "", "", text))

    for year in sorted({year for _, year, total in day_totals if total >= warn}):
        add(_jan1(year + 1), f"1 January {year + 1}: the year total resets to 0")
    for s in suspensions:
        reason = s.end_note or f"suspension by {', '.join(map(cause_text, s.causes))} served"
        add(s.until + 1, f"suspension ended on {_iso(s.until)}: {reason}")
    return derived


# --------------------------------------------------------------------------
# The whole ledger.


def _items(ledger: Ledger, rows: I64s) -> list[_Item]:
    """Replay items of ledger ``rows``, in the order given (built by zip, in C)."""
    kind = ledger.kind[rows]
    phase = np.where(kind == Kind.SHORTEN, _PHASE_SHORTEN, _PHASE_POINTS)
    event_id = ledger.event_id
    return list(
        zip(
            ledger.effective_on[rows].tolist(),
            phase.tolist(),
            [event_id[r] for r in rows.tolist()],
            kind.tolist(),
            ledger.points[rows].tolist(),
            ledger.suspension_months[rows].tolist(),
            _years_of(ledger.effective_on[rows]).tolist(),
            ledger.line[rows].tolist(),
            strict=True,
        )
    )


def _registry_items(registrations: RegistrationStarts, keys: U64s) -> dict[int, list[_Item]]:
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
    out: dict[int, list[_Item]] = {}
    for p, d, y, line in zip(
        prac[rows].tolist(),
        days.tolist(),
        _years_of(days).tolist(),
        registrations.line[rows].tolist(),
        strict=True,
    ):
        out.setdefault(p, []).append((d, _PHASE_REGISTER, "", _REGISTER, 0, 0, y, line))
    return out


def _groups(ledger: Ledger, in_effect: Bools) -> tuple[U64s, I64s, I64s]:
    """Practitioners with any ledger row (sorted), and their in-effect rows
    grouped: rows of ``keys[i]`` are ``order[offsets[i]:offsets[i+1]]``, in
    file order. One stable argsort; no Python loop."""
    by_key = np.argsort(ledger.practitioner, kind="stable")
    sorted_keys = ledger.practitioner[by_key]
    first = np.ones(len(sorted_keys), dtype=np.bool_)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    keys = sorted_keys[first]
    order = by_key[in_effect[by_key]].astype(np.int64)
    offsets = np.searchsorted(ledger.practitioner[order], keys, side="left").astype(np.int64)
    return keys, order, np.append(offsets, len(order)).astype(np.int64)


def _one_event_timelines(
    ledger: Ledger, policy: Policy, order: I64s, offsets: I64s
) -> tuple[Bools, list[tuple[I64s, ...]], list[tuple[I64s, ...]]]:
    """Fast path: practitioners with exactly one event in effect, all at once
    with numpy (the common case: 1M events over 15M people). Returns which
    practitioners it did and their (index, day, status, until) and (index,
    day, points) rows. A lone 12-point SCORE (termination: registry records
    matter) and a suspending SCORE lacking its length (an error to report)
    are left to the replay."""
    counts = np.diff(offsets)
    n = len(counts)
    if len(order) == 0:
        return np.zeros(n, np.bool_), [], []
    row = order[np.minimum(offsets[:-1], len(order) - 1)]
    single = counts == 1
    kind = ledger.kind[row]
    pts = ledger.points[row].astype(np.int64)
    day = ledger.effective_on[row].astype(np.int64)
    # A lone REPAIR subtracts from 0 and a lone SHORTEN has nothing to end.
    quiet = single & ((kind == Kind.REPAIR) | (kind == Kind.SHORTEN))
    score = single & (kind == Kind.SCORE)
    low = score & (pts < policy.suspend_at)
    band = score & (pts >= policy.suspend_at) & (pts < policy.terminate_at)
    if policy.needs_event_months:
        months = ledger.suspension_months[row].astype(np.int64)
        band &= months != NO_MONTHS
    else:
        table = np.zeros(policy.terminate_at, np.int64)
        for p in range(policy.suspend_at, policy.terminate_at):
            table[p] = policy.suspension_months(p, p, NO_MONTHS)
        months = table[np.where(band, pts, 0)]
    new_year = _jan1_of(_years_of(day) + 1)

    st: list[tuple[I64s, ...]] = []
    idx = np.flatnonzero(low & (pts >= policy.warn_at))
    st.append((idx, day[idx], np.full(len(idx), Status.WARNED), np.full(len(idx), DAY_NONE)))
    idx = idx[new_year[idx] <= MAX_DAY]
    st.append((idx, new_year[idx], np.full(len(idx), Status.ACTIVE), np.full(len(idx), DAY_NONE)))

    idx = np.flatnonzero(band)
    until = add_months_array(day[idx], months[idx]) - 1
    st.append((idx, day[idx], np.full(len(idx), Status.SUSPENDED), np.minimum(until, MAX_DAY)))
    after = until + 1
    # After the suspension: WARNED for the rest of the year (the total is
    # >= 9), ACTIVE if the suspension ran into the next year.
    fits = after <= MAX_DAY
    same_year = after < new_year[idx]
    i = idx[fits]
    status = np.where(same_year[fits], Status.WARNED, Status.ACTIVE)
    st.append((i, after[fits], status, np.full(len(i), DAY_NONE)))
    i = idx[same_year & (new_year[idx] <= MAX_DAY)]
    st.append((i, new_year[i], np.full(len(i), Status.ACTIVE), np.full(len(i), DAY_NONE)))

    idx = np.flatnonzero(low | band)
    pt: list[tuple[I64s, ...]] = [(idx, day[idx], pts[idx])]
    return quiet | low | band, st, pt


def derive_statuses(
    ledger: Ledger,
    policy: Policy,
    registrations: RegistrationStarts | None = None,
    *,
    check_registry: bool = True,
    fast_path: bool = True,
) -> PointsResult:
    """Replay the whole ledger under ``policy``; see the module docstring.

    ``registrations`` are the registry's ``registered_on`` days (for
    re-registration after a termination); with ``check_registry`` (the
    default) a record inside a re-registration bar raises ``LoadError``.
    ``fast_path=False`` replays everyone in Python (tests compare the two)."""
    registrations = registrations or RegistrationStarts.empty()
    in_effect = resolve_revocations(ledger)
    keys, order, offsets = _groups(ledger, in_effect)
    n = len(keys)
    counts = np.diff(offsets)

    st_parts: list[tuple[I64s, ...]] = []
    pt_parts: list[tuple[I64s, ...]] = []
    slow = counts > 0
    if fast_path:
        done, st_parts, pt_parts = _one_event_timelines(ledger, policy, order, offsets)
        slow &= ~done

    # The others, one practitioner at a time in Python.
    slow_idx: list[int] = np.flatnonzero(slow).tolist()
    slow_rows = order[np.repeat(slow, counts)]
    slow_off = np.concatenate(([0], np.cumsum(counts[slow]))).tolist()
    items = _items(ledger, slow_rows)
    key_list: list[int] = keys.tolist()
    replays: dict[int, Replay] = {}
    for k, i in enumerate(slow_idx):
        mine = items[slow_off[k] : slow_off[k + 1]]
        mine.sort()
        replays[i] = _replay(mine, policy, ledger.file, registrations.file, key_list[i], False)
    # Registry records only matter after a termination: replay those again with them.
    terminated = [k for k, i in enumerate(slow_idx) if replays[i].terminated]
    if terminated:
        regs = _registry_items(registrations, keys[[slow_idx[k] for k in terminated]])
        for k in terminated:
            i = slow_idx[k]
            mine = items[slow_off[k] : slow_off[k + 1]] + regs.get(key_list[i], [])
            mine.sort()
            replays[i] = _replay(mine, policy, ledger.file, registrations.file, key_list[i], False)

    s_idx: list[int] = []
    s_cols: list[int] = []  # day, status, until interleaved
    p_idx: list[int] = []
    p_cols: list[int] = []  # day, points interleaved
    violations: list[BarViolation] = []
    for i, rep in replays.items():
        for ch in rep.status_changes:
            s_idx.append(i)
            s_cols += (ch.day, ch.status, ch.until)
        for d, p in rep.points_changes:
            p_idx.append(i)
            p_cols += (d, p)
        violations.extend(rep.violations)
    st = np.array(s_cols, np.int64).reshape(-1, 3)
    pt = np.array(p_cols, np.int64).reshape(-1, 2)
    st_parts.append((np.array(s_idx, np.int64), st[:, 0], st[:, 1], st[:, 2]))
    pt_parts.append((np.array(p_idx, np.int64), pt[:, 0], pt[:, 1]))

    st_offsets, (st_day, st_status, st_until) = _csr(n, st_parts)
    pt_offsets, (pt_day, pt_points) = _csr(n, pt_parts)
    violations.sort(key=lambda v: (v.registry_line, v.practitioner))
    result = PointsResult(
        policy=policy.name,
        practitioners=keys.astype(np.uint64),
        st_offsets=st_offsets,
        st_day=st_day.astype(np.uint16),
        st_status=st_status.astype(np.uint8),
        st_until=st_until.astype(np.uint16),
        pt_offsets=pt_offsets,
        pt_day=pt_day.astype(np.uint16),
        pt_points=np.minimum(pt_points, POINTS_MAX_STORED).astype(np.uint16),
        violations=tuple(violations),
    )
    if check_registry:
        check_reregistrations(result)
    return result


def _csr(n: int, parts: Sequence[tuple[I64s, ...]]) -> tuple[I64s, list[I64s]]:
    """Concatenate (practitioner index, day, values...) parts and sort them by
    practitioner then day; return the offsets and the value columns."""
    width = len(parts[-1])
    cols = [np.concatenate([np.asarray(p[k], dtype=np.int64) for p in parts]) for k in range(width)]
    idx, day = cols[0], cols[1]
    order = np.lexsort((day, idx))
    counts = np.bincount(idx, minlength=n)
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    return offsets, [c[order] for c in cols[1:]]


def check_reregistrations(result: PointsResult) -> None:
    """Raise ``LoadError`` for the first (by registry line) registry record
    whose ``registered_on`` falls inside a re-registration bar."""
    if result.violations:
        raise min(result.violations, key=lambda v: v.registry_line).error()


def replay_practitioner(
    ledger: Ledger,
    policy: Policy,
    registrations: RegistrationStarts | None,
    practitioner: int,
) -> tuple[Replay, list[TrailEntry]]:
    """Replay one practitioner with the full trail (for ``loader.explain``).
    Returns the replay and trail entries for their revoked events and REVOKEs."""
    registrations = registrations or RegistrationStarts.empty()
    in_effect = resolve_revocations(ledger)
    mine = ledger.practitioner == np.uint64(practitioner)
    items = _items(ledger, np.flatnonzero(mine & in_effect).astype(np.int64))
    key = np.array([practitioner], dtype=np.uint64)
    items += _registry_items(registrations, key).get(practitioner, [])
    items.sort()
    replay = _replay(items, policy, ledger.file, registrations.file, practitioner, True)
    ignored: list[TrailEntry] = []
    for r in np.flatnonzero(mine & ~in_effect).tolist():
        src = f"{ledger.file}:{int(ledger.line[r])}"
        day = int(ledger.effective_on[r])
        if ledger.kind[r] == Kind.REVOKE:
            t = int(ledger.revokes[r])
            text = f"REVOKE of {ledger.event_id[t]} (line {int(ledger.line[t])})"
        else:
            text = f"{Kind(int(ledger.kind[r])).name} revoked (appeal upheld): ignored"
        ignored.append(TrailEntry(day, src, ledger.event_id[r], text))
    ignored.sort(key=lambda e: (e.day, e.event_id))
    return replay, ignored
