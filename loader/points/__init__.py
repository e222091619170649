"""The points engine (驾照式记分): scoring ledger + policy -> status timelines.

Pure: no I/O, no clock. The same ledger gives the same timelines whatever the
order of its lines, and ``trace_practitioner`` says which events produced
which status (``loader.explain`` lays it out).

Modules, one concept each (calendar arithmetic on day numbers is
``contract.days``'s):

    types        the ledger, registry records and results (Ledger, Kind,
                 RegistrationStarts, Replay, PointsResult, BarViolation)
    revocations  REVOKE resolution: which rows are in effect
    replay       the rules below, for one practitioner
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
``points_timelines()``). It raises ``LoadError`` for a registry record inside
a re-registration bar (``check_reregistrations``) and for a ledger the rules
cannot replay.

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
