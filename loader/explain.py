"""Why a practitioner has the status they have: one practitioner's replay,
told in words (``python -m loader explain ...``).

The text lists the practitioner's ledger events day by day: each day's
SCOREs and REPAIRs, then the day's settlement (year total before -> after,
and which rule the final total decided: no threshold, a suspension, no new
suspension, a termination and its bar, the registrations it ended), then
the day's SHORTENs; then the revoked events and the REVOKEs that removed
them, each status change point with the steps of its day that produced it,
the points change points, and any error (a registry record inside a
re-registration bar): ``Explanation.errors``, for the CLI's exit code.

It is computed by replaying that one practitioner with the same code as
``derive_statuses`` (``loader.points.trace_practitioner``, whose trail says
it in words), so it cannot disagree with the published timeline. This
module only lays the text out.
"""

from __future__ import annotations

from dataclasses import dataclass

from contract.codes import decode_practitioner, encode_practitioner
from contract.days import DAY_NONE, day_to_iso
from contract.errors import LoadError
from loader.points import Ledger, RegistrationStarts, Trace, TrailEntry, trace_practitioner
from loader.policy import Policy


@dataclass(frozen=True)
class Explanation:
    practitioner_code: str
    policy: Policy
    trace: Trace

    def text(self) -> str:
        return format_explanation(self)

    @property
    def errors(self) -> list[LoadError]:
        """The errors the explanation reports (a load would refuse them)."""
        return [v.error() for v in self.trace.replay.violations]


def explain_practitioner(
    ledger: Ledger,
    policy: Policy,
    registrations: RegistrationStarts | None,
    practitioner_code: str,
) -> Explanation:
    """Replay one practitioner (code as written, e.g. ``D110105000123``) with
    the full trail; raise ``InvalidCodeError`` for a malformed code."""
    key = encode_practitioner(practitioner_code)
    trace = trace_practitioner(ledger, policy, registrations, key)
    return Explanation(decode_practitioner(key), policy, trace)


def _entry(e: TrailEntry) -> str:
    who = f"{e.event_id} " if e.event_id else ""
    where = f" [{e.source}]" if e.source else ""
    return f"{who}{e.text}{where}"


def format_explanation(ex: Explanation) -> str:
    """The explanation as plain text, one fact a line."""
    t = ex.trace
    r = t.replay
    out = [f"Practitioner {ex.practitioner_code}, policy {ex.policy.name}: {ex.policy.title}"]
    out.append("")
    out.append("Replay, day by day (a day's events settle together):")
    if not t.trail:
        out.append("  (no events in effect)")
    out.extend(f"  {day_to_iso(e.day)}  {_entry(e)}" for e in t.trail)
    if t.ignored:
        out.append("")
        out.append("Revoked (never happened) and REVOKEs:")
        out.extend(f"  {day_to_iso(e.day)}  {_entry(e)}" for e in t.ignored)
    out.append("")
    out.append("Status timeline:")
    if not r.status_changes:
        out.append("  ACTIVE throughout (no status change points)")
    for change, causes in zip(r.status_changes, t.causes, strict=True):
        until = f" until {day_to_iso(change.until)}" if change.until != DAY_NONE else ""
        out.append(f"  from {day_to_iso(change.day)}  {change.status.name}{until}")
        for cause in causes:
            out.append(f"      because: {_entry(cause)}")
    out.append("")
    out.append("Points (year total from that day; 0 in a later year):")
    if not r.points_changes:
        out.append("  none")
    out.extend(f"  from {day_to_iso(day)}  {total}" for day, total in r.points_changes)
    for error in ex.errors:
        out.append("")
        out.append(f"ERROR: {error}")
    return "\n".join(out)
