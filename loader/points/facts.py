"""What a traced replay reports, step by step, as plain data: the rules in
``loader.points.replay`` append these; ``loader.points.trail`` turns them
into words. Days are day numbers; ``event_id`` and ``line`` name the ledger
event (``line`` alone, the registry record) that the step is about.

A day is settled as one (rule 2 of the package docstring), so most facts are
about a day rather than an event: each SCORE and REPAIR of the day is listed
(``EventApplied``), then ``DaySettled`` says how the year total moved and
which rule the day's final total decided (its ``decision``). Endings that
follow from the timeline as a whole (``YearReset``, ``SuspensionEnded``) are
reported after the last step."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True, slots=True)
class EventApplied:
    """A SCORE or REPAIR of the day, as it enters the day's settlement."""

    day: int
    event_id: str
    line: int
    kind: int  # Kind.SCORE or Kind.REPAIR
    points: int
    months: int  # suspension_months as given; 0 = none
    case: str  # the case_id; "" when the event is a case of its own


@dataclass(frozen=True, slots=True)
class NoThreshold:
    """The day's final total crossed no threshold (or the day had no SCORE)."""


class SuspensionEffect(Enum):
    """What a suspending day did to the suspensions."""

    STARTED = "started"  # none was running: a new one
    EXTENDED = "extended"  # the running one now ends later
    WITHIN = "within"  # the running one already ends as late or later


@dataclass(frozen=True, slots=True)
class Suspended:
    """The day's final total is in the suspension band and the day suspends:
    the first suspension of the year, or a new one the authority decided."""

    total: int
    months: int  # the longest length of the day
    first_of_year: bool
    months_from: tuple[str, ...]  # event_ids whose suspension_months gave it; () = policy table
    effect: SuspensionEffect
    start: int  # of the (running or new) suspension
    until: int  # its last day after the day


@dataclass(frozen=True, slots=True)
class NoNewSuspension:
    """The final total is in the suspension band, a suspension was already
    triggered this year, and no SCORE of the day carries suspension_months."""

    total: int
    year: int


@dataclass(frozen=True, slots=True)
class Terminated:
    """The day's final total reached the termination threshold."""

    total: int
    case_points: int  # the most points one case of the day carries this year
    case: str  # that case (its case_id, or the event_id of a case of its own)
    bar_years: int
    bar_end: int  # first day re-registration is allowed
    superseded_from: int  # start of the suspension it cut short; -1 = none


class WhileTerminated(Enum):
    """What a day's SCOREs did while the practitioner was already TERMINATED."""

    POINTS_RECORDED = "points recorded"  # the total stayed below termination
    BAR_EXTENDED = "bar extended"  # total at termination again, a later bar end
    BAR_ALREADY_LONGER = "bar already longer"  # total at termination again, bar ends later


@dataclass(frozen=True, slots=True)
class ScoredWhileTerminated:
    outcome: WhileTerminated
    bar_end: int  # the bar's end after the day


Decision = NoThreshold | Suspended | NoNewSuspension | Terminated | ScoredWhileTerminated


@dataclass(frozen=True, slots=True)
class DaySettled:
    """The day's REPAIRs and SCOREs moved the year total from ``before`` to
    ``after`` (never below 0), and ``decision`` is what that final total did."""

    day: int
    year: int
    before: int
    after: int
    events: tuple[tuple[int, str], ...]  # (kind, event_id): the REPAIRs, then the SCOREs
    decision: Decision


class ShortenEffect(Enum):
    SUSPENSION_SHORTENED = "suspension shortened"  # running on the day: ends the day before
    SUSPENSION_CANCELLED = "suspension cancelled"  # starting on the day: never runs
    BAR_SHORTENED = "bar shortened"  # the re-registration bar now ends the day before
    BAR_ALREADY_OVER = "bar already over"
    NOTHING_RUNNING = "nothing running"


@dataclass(frozen=True, slots=True)
class Shortened:
    """A SHORTEN event and what it ended (after the day settled)."""

    day: int
    event_id: str
    line: int
    effects: tuple[ShortenEffect, ...]


class RegistrationOutcome(Enum):
    ALREADY_REREGISTERED = "already re-registered"  # after an earlier re-registration
    REREGISTERED = "re-registered"  # on or after the bar: the termination ends
    INSIDE_BAR = "inside the bar"  # refused (a BarViolation)


@dataclass(frozen=True, slots=True)
class Registered:
    """A registry record met during a termination (or after one)."""

    day: int
    line: int  # in the registry file
    outcome: RegistrationOutcome
    bar_end: int  # the bar's end at that time (INSIDE_BAR)


@dataclass(frozen=True, slots=True)
class RegistrationClosed:
    """A termination on ``day`` ended a registration that began on or before it."""

    day: int
    line: int  # in the registry file
    registered_on: int
    was_until: int  # its deregistered_on before; DAY_NONE = open
    ends_on: int  # its deregistered_on now


@dataclass(frozen=True, slots=True)
class YearReset:
    """1 January of ``year``: the total of a year that reached WARNED resets to 0."""

    day: int
    year: int


class SuspensionCut(Enum):
    SHORTENED = "shortened"  # by a SHORTEN
    SUPERSEDED = "superseded"  # by a termination


@dataclass(frozen=True, slots=True)
class SuspensionEnded:
    """A run of suspension ended: ``day`` is the day after its last, ``until``."""

    day: int
    until: int
    causes: tuple[str, ...]  # the SCOREs that set its end, "E1 (ledger.csv:2)"
    cut: SuspensionCut | None  # why it ended early; None = served in full
    cut_by: str  # what cut it ("" if served)


Step = EventApplied | DaySettled | Shortened | Registered | RegistrationClosed
Ending = YearReset | SuspensionEnded
Fact = Step | Ending
