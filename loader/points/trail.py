"""The explanation trail: one practitioner replayed with ``facts`` on, and
each fact told in words (``TrailEntry``), with, for every status change
point, the entries of its day that caused it. ``loader.explain`` lays it out.
All the engine's explanation text is here; the rules (``replay``) have none
but the bar's label (``replay.bar_label``), which a refused registry record
carries into its error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contract.days import DAY_NONE, day_to_iso
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
from loader.points.replay import bar_label, ledger_items, registry_items, replay_items
from loader.points.revocations import resolve_revocations
from loader.points.types import Bools, Kind, Ledger, RegistrationStarts, Replay
from loader.policy import Policy


@dataclass(frozen=True)
class TrailEntry:
    """One step of a replay, for explanations: what happened on ``day``."""

    day: int
    source: str  # "file:line" of the ledger event or registry record; "" if derived
    event_id: str  # "" for registry records and derived steps
    text: str


@dataclass(frozen=True)
class Trace:
    """One practitioner's replay told in words."""

    replay: Replay
    trail: list[TrailEntry]  # every step, in replay order
    # For each status change point, the trail entries of its day that caused
    # it, then the endings of that day (New Year, end of a suspension).
    causes: list[list[TrailEntry]]
    ignored: list[TrailEntry]  # revoked events and the REVOKEs


def trace_practitioner(
    ledger: Ledger,
    policy: Policy,
    registrations: RegistrationStarts | None,
    practitioner: int,
) -> Trace:
    """Replay one practitioner with the full trail, by the same code as
    ``derive_statuses`` (so it cannot disagree with the published timeline)."""
    registrations = registrations or RegistrationStarts.empty()
    in_effect = resolve_revocations(ledger)
    mine = ledger.practitioner == np.uint64(practitioner)
    items = ledger_items(ledger, np.flatnonzero(mine & in_effect).astype(np.int64))
    key = np.array([practitioner], dtype=np.uint64)
    items += registry_items(registrations, key).get(practitioner, [])
    items.sort()
    facts: list[Fact] = []
    replay = replay_items(
        items, policy, ledger.file, registrations.file, practitioner, facts, ledger.case_names
    )

    trail: list[TrailEntry] = []
    endings: dict[int, list[TrailEntry]] = {}
    for fact in facts:
        if isinstance(fact, YearReset | SuspensionEnded):
            entry = TrailEntry(fact.day, "", "", _ending_text(fact))
            endings.setdefault(fact.day, []).append(entry)
        elif isinstance(fact, Registered | RegistrationClosed):
            source = f"{registrations.file}:{fact.line}"
            trail.append(TrailEntry(fact.day, source, "", _registry_text(fact)))
        elif isinstance(fact, DaySettled):
            trail.append(TrailEntry(fact.day, "", "", _settled_text(fact, policy)))
        else:
            source = f"{ledger.file}:{fact.line}"
            trail.append(TrailEntry(fact.day, source, fact.event_id, _event_text(fact)))
    causes = [
        [e for e in trail if e.day == c.day] + endings.get(c.day, []) for c in replay.status_changes
    ]
    return Trace(replay, trail, causes, _ignored(ledger, mine & ~in_effect))


def _event_text(fact: EventApplied | Shortened) -> str:
    if isinstance(fact, Shortened):
        said = "; ".join(_SHORTEN_TEXT[e].format(day_to_iso(fact.day)) for e in fact.effects)
        return f"SHORTEN: {said}"
    sign = "+" if fact.kind == Kind.SCORE else "-"
    text = f"{Kind(fact.kind).name} {sign}{fact.points}"
    if fact.months:
        text += f", suspension_months {fact.months}"
    if fact.case:
        text += f", case {fact.case}"
    return text


_SHORTEN_TEXT = {
    ShortenEffect.SUSPENSION_SHORTENED: "the suspension running on {0} ends the day before",
    ShortenEffect.SUSPENSION_CANCELLED: (
        "the suspension starting on {0} is cancelled (SHORTEN on its first day)"
    ),
    ShortenEffect.BAR_SHORTENED: "the re-registration bar ends the day before: allowed from {0}",
    ShortenEffect.BAR_ALREADY_OVER: "the re-registration bar is already over: nothing to shorten",
    ShortenEffect.NOTHING_RUNNING: "no suspension or bar running: nothing to shorten",
}


def _settled_text(fact: DaySettled, policy: Policy) -> str:
    """One line for the day: the total, the events that moved it, and the
    rule the final total decided ("day settled: total 3 → 6 after REPAIR E2
    and SCORE E1; no threshold crossed")."""
    named = [f"{Kind(kind).name} {eid}" for kind, eid in fact.events]
    listed = named[0] if len(named) == 1 else f"{', '.join(named[:-1])} and {named[-1]}"
    return (
        f"day settled: total {fact.before} → {fact.after} after {listed}; "
        f"{_decision_text(fact.decision, fact.year, policy)}"
    )


def _decision_text(decision: Decision, year: int, policy: Policy) -> str:
    terminate, suspend = policy.terminate_at, policy.suspend_at
    match decision:
        case NoThreshold():
            return "no threshold crossed"
        case ScoredWhileTerminated(outcome=WhileTerminated.BAR_EXTENDED):
            return (
                f"already TERMINATED; total >= {terminate} again: "
                f"re-registration barred until {day_to_iso(decision.bar_end - 1)}"
            )
        case ScoredWhileTerminated(outcome=WhileTerminated.BAR_ALREADY_LONGER):
            return f"already TERMINATED; total >= {terminate} again, the bar already runs longer"
        case ScoredWhileTerminated():
            return "already TERMINATED; points recorded"
        case Terminated():
            label = bar_label(policy, decision.case_points, decision.case)
            cut = ""
            if decision.superseded_from >= 0:
                since = day_to_iso(decision.superseded_from)
                cut = f"; the suspension from {since} ends the day before"
            return (
                f"total {decision.total} >= {terminate}: TERMINATED until re-registered; "
                f"{label}, re-registration allowed from {day_to_iso(decision.bar_end)}{cut}"
            )
        case NoNewSuspension():
            return (
                f"total {decision.total} >= {suspend}, but a suspension was already triggered "
                f"in {decision.year} and no SCORE of the day carries suspension_months: "
                "no new suspension"
            )
        case Suspended():
            start, until = day_to_iso(decision.start), day_to_iso(decision.until)
            if decision.effect is SuspensionEffect.STARTED:
                what = f"SUSPENDED {start} .. {until}"
            elif decision.effect is SuspensionEffect.EXTENDED:
                what = f"the running suspension (from {start}) now ends {until}"
            else:
                what = f"within the running suspension (from {start}), which ends {until}"
            if decision.months_from:
                source = f"suspension_months of {', '.join(decision.months_from)}"
            else:
                source = f"policy {policy.name} table"
            which = (
                f"the first suspension of {year}"
                if decision.first_of_year
                else f"a new suspension of {year} (suspension_months given)"
            )
            return (
                f"total {decision.total} >= {suspend}, {which}: "
                f"{decision.months} month(s) ({source}) -> {what}"
            )
    raise AssertionError(decision)


def _registry_text(fact: Registered | RegistrationClosed) -> str:
    if isinstance(fact, RegistrationClosed):
        was = "open" if fact.was_until == DAY_NONE else f"until {day_to_iso(fact.was_until - 1)}"
        return (
            f"registration from {day_to_iso(fact.registered_on)} ({was}) ended by the "
            f"termination: no longer registered from {day_to_iso(fact.ends_on)}"
        )
    if fact.outcome is RegistrationOutcome.ALREADY_REREGISTERED:
        return "registry record: already re-registered"
    if fact.outcome is RegistrationOutcome.REREGISTERED:
        return "re-registered: the termination ends, year total reset to 0"
    return (
        "registry record inside the re-registration bar "
        f"(barred until {day_to_iso(fact.bar_end - 1)}): refused"
    )


def _ending_text(fact: YearReset | SuspensionEnded) -> str:
    if isinstance(fact, YearReset):
        return f"1 January {fact.year}: the year total resets to 0"
    if fact.cut is SuspensionCut.SUPERSEDED:
        reason = f"superseded by the termination by {fact.cut_by}"
    elif fact.cut is SuspensionCut.SHORTENED:
        reason = f"shortened by {fact.cut_by}"
    else:
        reason = f"suspension by {'; '.join(fact.causes)} served"
    return f"suspension ended on {day_to_iso(fact.until)}: {reason}"


def _ignored(ledger: Ledger, revoked: Bools) -> list[TrailEntry]:
    """Trail entries for the practitioner's revoked events and REVOKEs (rule 11)."""
    ignored: list[TrailEntry] = []
    for r in np.flatnonzero(revoked).tolist():
        source = f"{ledger.file}:{int(ledger.line[r])}"
        day = int(ledger.effective_on[r])
        if ledger.kind[r] == Kind.REVOKE:
            t = int(ledger.revokes[r])
            text = f"REVOKE of {ledger.event_id[t]} (line {int(ledger.line[t])})"
        else:
            text = f"{Kind(int(ledger.kind[r])).name} revoked (appeal upheld): ignored"
        ignored.append(TrailEntry(day, source, ledger.event_id[r], text))
    ignored.sort(key=lambda e: (e.day, e.event_id))
    return ignored
