"""The whole ledger: ``derive_statuses`` resolves the REVOKEs, takes the
numpy shortcut for practitioners with one event (``fast``), replays the
others one at a time (``replay``), and assembles the CSR ``PointsResult``.
Registry records are looked up only for the practitioners the first replay
terminated, which are then replayed again with them; that replay also says
which of their registrations the terminations ended (``closed_rows``)."""

from __future__ import annotations

import numpy as np

from loader.points.fast import csr, group_rows, one_event_timelines
from loader.points.replay import ledger_items, registry_items, replay_items
from loader.points.revocations import resolve_revocations
from loader.points.types import (
    POINTS_MAX_STORED,
    BarViolation,
    ClosedRegistration,
    I64s,
    Ledger,
    PointsResult,
    RegistrationStarts,
    Replay,
)
from loader.policy import Policy


def derive_statuses(
    ledger: Ledger,
    policy: Policy,
    registrations: RegistrationStarts | None = None,
    *,
    check_registry: bool = True,
    fast_path: bool = True,
) -> PointsResult:
    """Replay the whole ledger under ``policy``; see the package docstring.

    ``registrations`` are the registry's ``registered_on`` days (for
    re-registration after a termination); with ``check_registry`` (the
    default) a record inside a re-registration bar raises ``LoadError``.
    ``fast_path=False`` replays everyone in Python (tests compare the two)."""
    registrations = registrations or RegistrationStarts.empty()
    in_effect = resolve_revocations(ledger)
    keys, order, offsets = group_rows(ledger, in_effect)
    n = len(keys)
    counts = np.diff(offsets)

    st_parts: list[tuple[I64s, ...]] = []
    pt_parts: list[tuple[I64s, ...]] = []
    slow = counts > 0
    if fast_path:
        done, st_parts, pt_parts = one_event_timelines(ledger, policy, order, offsets)
        slow &= ~done

    # The others, one practitioner at a time in Python.
    slow_idx: list[int] = np.flatnonzero(slow).tolist()
    slow_rows = order[np.repeat(slow, counts)]
    slow_off = np.concatenate(([0], np.cumsum(counts[slow]))).tolist()
    items = ledger_items(ledger, slow_rows)
    key_list: list[int] = keys.tolist()
    replays: dict[int, Replay] = {}
    for k, i in enumerate(slow_idx):
        mine = items[slow_off[k] : slow_off[k + 1]]
        mine.sort()
        replays[i] = replay_items(
            mine, policy, ledger.file, registrations.file, key_list[i], None, ledger.case_names
        )
    # Registry records only matter after a termination: replay those again with them.
    terminated = [k for k, i in enumerate(slow_idx) if replays[i].terminated]
    if terminated:
        regs = registry_items(registrations, keys[[slow_idx[k] for k in terminated]])
        for k in terminated:
            i = slow_idx[k]
            mine = items[slow_off[k] : slow_off[k + 1]] + regs.get(key_list[i], [])
            mine.sort()
            replays[i] = replay_items(
                mine, policy, ledger.file, registrations.file, key_list[i], None, ledger.case_names
            )

    s_idx: list[int] = []
    s_cols: list[int] = []  # day, status, until interleaved
    p_idx: list[int] = []
    p_cols: list[int] = []  # day, points interleaved
    violations: list[BarViolation] = []
    closed: list[ClosedRegistration] = []
    for i, rep in replays.items():
        for ch in rep.status_changes:
            s_idx.append(i)
            s_cols += (ch.day, ch.status, ch.until)
        for d, p in rep.points_changes:
            p_idx.append(i)
            p_cols += (d, p)
        violations.extend(rep.violations)
        closed.extend(rep.closed)
    closed.sort(key=lambda c: c.row)
    st = np.array(s_cols, np.int64).reshape(-1, 3)
    pt = np.array(p_cols, np.int64).reshape(-1, 2)
    st_parts.append((np.array(s_idx, np.int64), st[:, 0], st[:, 1], st[:, 2]))
    pt_parts.append((np.array(p_idx, np.int64), pt[:, 0], pt[:, 1]))

    st_offsets, (st_day, st_status, st_until) = csr(n, st_parts)
    pt_offsets, (pt_day, pt_points) = csr(n, pt_parts)
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
        closed_rows=np.array([c.row for c in closed], dtype=np.int64),
        closed_on=np.array([c.ends_on for c in closed], dtype=np.uint16),
    )
    if check_registry:
        check_reregistrations(result)
    return result


def check_reregistrations(result: PointsResult) -> None:
    """Raise ``LoadError`` for the first (by registry line) registry record
    whose ``registered_on`` falls inside a re-registration bar."""
    if result.violations:
        raise min(result.violations, key=lambda v: v.registry_line).error()
