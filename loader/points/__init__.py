"""The points engine (驾照式记分): scoring ledger + policy -> status timelines.

Pure: no I/O, no clock. The same ledger gives the same timelines whatever the
order of its lines and whatever its ``event_id``s, and ``trace_practitioner``
says which events produced which status (``loader.explain`` lays it out).

Modules, one concept each (calendar arithmetic on day numbers is
``contract.days``'s):

    types        the ledger, registry records and results (Ledger, Kind,
                 RegistrationStarts, Replay, PointsResult, BarViolation,
                 ClosedRegistration)
    revocations  REVOKE resolution: which rows are in effect
    replay       the rules below, for one practitioner, one day at a time
    facts        what a traced replay reports, as plain data
    trail        the explanation trail: those facts in words
    fast         the numpy shortcut for one-event practitioners; CSR assembly
    derive       the whole ledger: derive_statuses, check_reregistrations

Entry point: ``derive_statuses(ledger, policy, registrations)`` returns a
``PointsResult``: for every practitioner with ledger rows, the status change
points (``loader.timeline.StatusChange(day, status, until)``: the status holds
from ``day`` until the next point; ``until`` is the last day of a suspension,
DAY_NONE otherwise; before the first point the practitioner is ACTIVE) and
the points change points ``(day, year total from that day)``. They come as CSR
arrays and as dicts for ``loader.build.build_arrays`` (``timelines()`` /
``points_timelines()``), with the registrations terminations ended
(``closed_rows``, ``closed_on``: rule 8). It raises ``LoadError`` for a registry record inside
a re-registration bar (``check_reregistrations``) and for a ledger the rules
cannot replay.

The rules (SPEC §7 with its "Clarifications (2026-12-03)"), with every
interpretation chosen where the SPEC is silent; the example after each is a
worked example in ``tests/test_points.py``:

1.  Points add up per calendar year by ``effective_on`` and reset on 1 January.
    Points from all institutions add up on the one person.
2.  A day settles as one. A practitioner's events are grouped by
    ``effective_on``; nothing depends on their ``event_id``s or on the order
    of the lines. REVOKEs are resolved first, on the whole ledger (rule 11).
    Then, for each day: (a) SHORTENs end what was running into the day
    (rule 10); (b) registry records of the day count (rule 8: a
    re-registration counts from the start of its day); (c) all the day's
    REPAIRs and SCOREs change the year total together: the day's final total
    is ``max(0, total + its SCOREs - its REPAIRs)`` (the net, so no order of
    the day can matter); (d) the thresholds are tested once, on that final
    total, and only on a day with a SCORE; (e) SHORTENs end what the day
    started (rule 10). Example: total 3; one day a REPAIR of 3 and a SCORE of
    6 -> total 6, WARNED, no suspension, whichever the ids; total 3, then a
    SCORE of 6 and a REPAIR of 10 the same day -> 0.
3.  WARNED: the status whenever the year total is >= ``warn`` (6) and no
    suspension or termination is in force; this includes the rest of a year
    after a suspension has ended with the total still >= 6 (>= 9 included: the
    person stays on notice). On 1 January the total is 0 and WARNED ends.
4.  SUSPENDED, thresholds trigger when crossed. A day whose final total is
    in the suspension band (9..11) suspends from that day when it is the
    first suspension of that calendar year (since the last re-registration);
    after one has been triggered that year (served, running, shortened or
    cancelled since), it suspends again only if one of the day's SCOREs
    carries ``suspension_months`` (the authority decided a new suspension);
    with none the day only moves the total (WARNED), and the ledger is not
    refused. Example: 9 (1 month, served), then 10 without months -> WARNED;
    with 2 months -> suspended again for 2 months. A year's first
    suspension in the band needs no earlier one: a suspension that began in
    December does not count for January's.
    Length: the longest the day gives. National: the largest
    ``suspension_months`` among the day's SCOREs; a year's first suspension
    whose day has none is a ``LoadError`` (naming the day's SCOREs). Jiangxi
    (table): the longest of the year-total length (9/10/11 -> 1/3/5) and, for
    each case that scored that day, its single-case length when that case's
    points this year are 9/10/11 (-> 2/4/6); there ``suspension_months`` only
    says a new suspension was decided, the table still gives its length.
    Example: one day, a 3-point SCORE with 6 months and a 6-point SCORE with
    1 month -> 9 points, 6 months, whatever the ids.
    M months from day D cover D up to, not including, D + M months, the day
    clamped to the month's end: ``until`` is the day before. A suspension
    while one is running never stacks and never shortens it: the running one
    is extended to the later of the two ends (a union of intervals).
    Suspensions that touch or overlap are published as one change point
    whose ``until`` is the last day of the whole run. When a suspension ends,
    the status is WARNED or ACTIVE by the year total of that day.
5.  A suspension running across 31 December continues: the year total resets
    to 0 on 1 January, the suspension does not.
6.  TERMINATED: a day whose final total reaches 12 terminates from that day,
    also while suspended: the running suspension ends the day before; a day
    that reaches 12 never also suspends. One handling (一次): events sharing
    a ``case_id`` are one case; an event without one is a case of its own. A
    case's points are its SCOREs' points of the same calendar year so far.
    Re-registration is barred from the termination day for 3 years when a
    case that scored on the terminating day carries >= 12 points (一次性记满),
    otherwise for 1 year (累计记满); 29 February + 1 year is 28 February.
    Example: 7 + 5 points in one case_id -> 3-year bar; the same points as
    two cases -> 1-year bar; a case of 7 then 5 a month later -> 3 years from
    the second day.
7.  While TERMINATED, SCOREs still add points; a day that leaves the year
    total >= 12 again extends the bar to the later of the two ends (computed
    from that day and that day's largest case); no suspension starts while
    terminated.
8.  A termination ends the practitioner's registrations (登记备案状态维护为
    终止): every registry record that began before the termination day and
    still holds on it ends on that day (its ``deregistered_on`` becomes the
    termination day), even where the registry leaves ``deregistered_on``
    empty. A record beginning on the termination day itself counts as an
    earlier registration (it never ends a termination) and ends the day
    after: a registration period is never empty, and the person is
    TERMINATED that day anyway. ``Replay.closed`` / ``PointsResult.closed_rows``
    name those records and their new end; ``loader.pipeline`` applies them
    and the loader prints how many it closed. Re-registration: the first
    registry record whose ``registered_on`` is on or after the end of the bar
    ends the termination that day; the person is ACTIVE with a year total of
    0 from then (a points change point records the reset), and payable only
    at the institutions registered after the bar. A record with
    ``registered_on`` after the termination day but inside the bar is an
    error (``check_reregistrations``, naming the bar, its end and the events
    that set it; ``loader explain`` shows it and exits non-zero). Example:
    terminated, re-registered at B after the bar: a hospital line at A is
    NOT_REGISTERED_AT_INSTITUTION (``tests/test_points_e2e.py``).
9.  REPAIR subtracts its points from ``effective_on`` on, never below zero and
    never retroactively; it never ends a suspension or a termination. A
    REPAIR in a later year than the points it was meant for has nothing to
    subtract (the year already reset). Same-day REPAIRs: rule 2.
10. SHORTEN ends the sanction running on, or starting on, its
    ``effective_on`` the day before that date: a suspension running into the
    day ends the day before; one the same day starts is cancelled (it never
    runs; the day's total stands, so usually WARNED); while TERMINATED, the
    end of the re-registration bar moves to ``effective_on`` (re-registration
    allowed from that day; the termination itself lasts until re-registered).
    It never lengthens anything; with nothing running or starting it does
    nothing (the trail says so: the suspension may have been revoked since).
    Example: a SHORTEN dated on a suspension's first day cancels it; one
    dated the day before does nothing.
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

The trail (``trace_practitioner``, ``loader explain``) lists each day's
events, then one line for the day's settlement naming the rule its final
total decided, e.g. "day settled: total 3 → 6 after REPAIR E2 and SCORE E1;
no threshold crossed" (event ids in natural order, "E9" before "E10": only
the wording uses them).

Performance: rows are grouped per practitioner with one numpy argsort. The
common case, a practitioner with a single event in effect (a SCORE below 12,
a lone REPAIR or SHORTEN), is done for all of them at once with numpy (Fast
path; a day of one event settles as that event, so the rules agree); the
others are replayed in plain Python, one practitioner and one day at a time
(O(E log E) for their E events). Registry records are looked up only for the
practitioners the first replay terminated, which are then replayed again
with them. 1M events over 15M practitioners: see ``bench/RESULTS.md``.
"""

from loader.points.derive import check_reregistrations, derive_statuses
from loader.points.revocations import resolve_revocations
from loader.points.trail import Trace, TrailEntry, trace_practitioner
from loader.points.types import (
    NO_CASE,
    NO_EVENT,
    NO_MONTHS,
    POINTS_MAX_STORED,
    BarViolation,
    ClosedRegistration,
    Kind,
    Ledger,
    PointsResult,
    RegistrationStarts,
    RegistryColumns,
    Replay,
)

__all__ = [
    "NO_CASE",
    "NO_EVENT",
    "NO_MONTHS",
    "POINTS_MAX_STORED",
    "BarViolation",
    "ClosedRegistration",
    "Kind",
    "Ledger",
    "PointsResult",
    "RegistrationStarts",
    "RegistryColumns",
    "Replay",
    "Trace",
    "TrailEntry",
    "check_reregistrations",
    "derive_statuses",
    "resolve_revocations",
    "trace_practitioner",
]
