"""REVOKE resolution (申诉): which ledger rows are in effect. A REVOKE removes
the event its ``reference`` names, a REVOKE of a REVOKE reinstates it, and so
on down the chain (rule 11 of the package docstring). Pure; no replay."""

from __future__ import annotations

import numpy as np

from contract.errors import LoadError
from loader.points.types import Bools, Kind, Ledger


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
