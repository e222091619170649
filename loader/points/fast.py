"""The whole ledger's arrays: rows grouped per practitioner, the vectorised
shortcut for the common case, and the CSR assembly of the result.

Fast path: a practitioner with a single event in effect (a SCORE below the
termination threshold, a lone REPAIR or SHORTEN) needs no replay; those are
done for all practitioners at once with numpy, no Python loop per
practitioner (1M events over 15M people are mostly that case). The results
agree with ``loader.points.replay`` (a property test compares them).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from contract.days import DAY_NONE, MAX_DAY, add_months_array, jan1_days, years_of_days
from contract.domain import Status
from loader.points.types import NO_MONTHS, Bools, I64s, Kind, Ledger, U64s
from loader.policy import Policy


def group_rows(ledger: Ledger, in_effect: Bools) -> tuple[U64s, I64s, I64s]:
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


def one_event_timelines(
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
    new_year = jan1_days(years_of_days(day) + 1)

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


def csr(n: int, parts: Sequence[tuple[I64s, ...]]) -> tuple[I64s, list[I64s]]:
    """Concatenate (practitioner index, day, values...) parts and sort them by
    practitioner then day; return the offsets and the value columns."""
    width = len(parts[-1])
    cols = [np.concatenate([np.asarray(p[k], dtype=np.int64) for p in parts]) for k in range(width)]
    idx, day = cols[0], cols[1]
    order = np.lexsort((day, idx))
    counts = np.bincount(idx, minlength=n)
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    return offsets, [c[order] for c in cols[1:]]
