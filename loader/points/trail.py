"""The explanation trail: one practitioner replayed with ``facts`` on, and
each fact told in words (``TrailEntry``), with, for every status change
point, the entries of its day that caused it. ``loader.explain`` lays it out.
All the engine's explanation text is here; the rules (``replay``) have none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contract.days import day_to_iso
from loader.points.facts import (
    Fact,
    PointsApplied,
    Registered,
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
from loader.points.replay import ledger_items, registry_items, replay_items
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
    replay = replay_items(items, policy, ledger.file, registrations.file, practitioner, facts)

    trail: list[TrailEntry] = []
    endings: dict[int, list[TrailEntry]] = {}
    for fact in facts:
        if isinstance(fact, YearReset | SuspensionEnded):
            entry = TrailEntry(fact.day, "", "", _ending_text(fact, ledger.file))
            endings.setdefault(fact.day, []).append(entry)
        elif isinstance(fact, Registered):
            source = f"{registrations.file}:{fact.line}"
            trail.append(TrailEntry(fact.day, source, "", _registry_text(fact)))
        else:
            source = f"{ledger.file}:{fact.line}"
            trail.append(TrailEntry(fact.day, source, fact.event_id, _step_text(fact, policy)))
    causes = [
        [e for e in trail if e.day == c.day] + endings.get(c.day, []) for c in replay.status_changes
    ]
    return Trace(replay, trail, causes, _ignored(ledger, mine & ~in_effect))


def _step_text(
    fact: PointsApplied | Terminated | ScoredWhileTerminated | Suspended | Shortened,
    policy: Policy,
) -> str:
    terminate, suspend = policy.terminate_at, policy.suspend_at
    match fact:
        case PointsApplied():
            sign = "+" if fact.kind == Kind.SCORE else "-"
            return (
                f"{Kind(fact.kind).name} {sign}{fact.points}: "
                f"{fact.year} total {fact.before} -> {fact.after}"
            )
        case ScoredWhileTerminated(outcome=WhileTerminated.BAR_EXTENDED):
            return (
                f"already TERMINATED; total >= {terminate} again: "
                f"re-registration barred until {day_to_iso(fact.bar_end - 1)}"
            )
        case ScoredWhileTerminated(outcome=WhileTerminated.BAR_ALREADY_LONGER):
            return "already TERMINATED; the bar already runs longer"
        case ScoredWhileTerminated():
            return "already TERMINATED; points recorded"
        case Terminated():
            return (
                f"total {fact.total} >= {terminate}: TERMINATED until re-registered; "
                f"{policy.bar_label(fact.points)}, re-registration allowed from "
                f"{day_to_iso(fact.bar_end)}"
            )
        case Suspended():
            start, until = day_to_iso(fact.start), day_to_iso(fact.until)
            if fact.effect is SuspensionEffect.STARTED:
                what = f"SUSPENDED {start} .. {until}"
            elif fact.effect is SuspensionEffect.EXTENDED:
                what = f"the running suspension (from {start}) now ends {until}"
            else:
                what = f"within the running suspension (from {start}), which ends {until}"
            return f"total {fact.total} >= {suspend}: {fact.months} month(s) -> {what}"
        case Shortened():
            return f"SHORTEN: {_SHORTEN_TEXT[fact.effect].format(day_to_iso(fact.day - 1))}"


_SHORTEN_TEXT = {
    ShortenEffect.BAR_SHORTENED: "re-registration bar ends {}",
    ShortenEffect.BAR_ALREADY_OVER: "the re-registration bar is already over: nothing to shorten",
    ShortenEffect.SUSPENSION_SHORTENED: "the suspension ends {}",
    ShortenEffect.NOTHING_RUNNING: "no suspension or bar running: nothing to shorten",
}


def _registry_text(fact: Registered) -> str:
    if fact.outcome is RegistrationOutcome.ALREADY_REREGISTERED:
        return "registry record: already re-registered"
    if fact.outcome is RegistrationOutcome.REREGISTERED:
        return "re-registered: the termination ends, year total reset to 0"
    return (
        "registry record inside the re-registration bar "
        f"(barred until {day_to_iso(fact.bar_end - 1)}): refused"
    )


def _ending_text(fact: YearReset | SuspensionEnded, ledger_file: str) -> str:
    if isinstance(fact, YearReset):
        return f"1 January {fact.year}: the year total resets to 0"
    if fact.cut is SuspensionCut.SUPERSEDED:
        reason = f"superseded by the termination by {fact.cut_by}"
    elif fact.cut is SuspensionCut.SHORTENED:
        reason = f"shortened by {fact.cut_by}"
    else:
        by = ", ".join(f"{eid} ({ledger_file}:{line})" for eid, line in fact.causes)
        reason = f"suspension by {by} served"
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
