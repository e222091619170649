"""Worked examples of the points engine: one per rule and per open case of
``loader.points``, each with the ledger, the registry records, and the
expected timeline spelled out as ``"from-day STATUS [until]"`` and
``"day total"`` strings (and, where a termination ends registrations,
``"registered_on -> new deregistered_on"``). Every case is also checked with
its ledger lines in reverse order, with its event_ids renamed, and with the
numpy fast path off (the timeline must not change)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from contract.codes import encode_practitioner
from contract.days import (
    DAY_NONE,
    MAX_DAY,
    add_months,
    add_months_array,
    add_years,
    day_to_date,
    iso_to_day,
    suspension_until,
)
from contract.domain import Status
from contract.errors import LoadError
from loader.explain import explain_practitioner
from loader.ledger import parse_ledger
from loader.points import Ledger, PointsResult, RegistrationStarts, derive_statuses
from loader.policy import load_policy
from loader.timeline import StatusChange

P = "D110105000001"
Q = "HY110105000002"
HEADER = (
    "event_id,practitioner_code,institution_code,kind,points,"
    "effective_on,suspension_months,reference,case_id"
)
Row = tuple[str, str, str, str, str, str, str, str, str]


def score(
    eid: str,
    points: int,
    date: str,
    months: int | None = None,
    *,
    who: str = P,
    inst: str = "H11010500001",
    case: str = "",
) -> Row:
    shown = "" if months is None else str(months)
    return (eid, who, inst, "SCORE", str(points), date, shown, "", case)


def repair(eid: str, points: int, date: str, *, who: str = P) -> Row:
    return (eid, who, "", "REPAIR", str(points), date, "", "", "")


def shorten(eid: str, date: str, *, who: str = P) -> Row:
    return (eid, who, "", "SHORTEN", "", date, "", "", "")


def revoke(eid: str, target: str, date: str, *, who: str = P) -> Row:
    return (eid, who, "", "REVOKE", "", date, "", target, "")


def renamed(rows: list[Row]) -> list[Row]:
    """The same ledger with every event_id renamed (the last becomes "X1",
    the first "X<n>": string order and number order both reversed)."""
    new = {r[0]: f"X{len(rows) - i}" for i, r in enumerate(rows)}
    return [(new[r[0]], *r[1:7], new.get(r[7], r[7]), r[8]) for r in rows]


def ledger_of(rows: list[Row], policy: str = "national", file: str = "ledger.csv") -> Ledger:
    text = "\n".join([HEADER, *(",".join(r) for r in rows)]) + "\n"
    return parse_ledger(text.encode(), file, load_policy(policy), file_format="csv")


def registry_of(dates: list[str], who: str = P) -> RegistrationStarts:
    """Registry records of ``who`` on lines 2.. of registry.csv."""
    n = len(dates)
    return RegistrationStarts(
        "registry.csv",
        np.full(n, encode_practitioner(who), dtype=np.uint64),
        np.array([iso_to_day(d) for d in dates], dtype=np.uint16),
        np.arange(2, n + 2, dtype=np.int64),
    )


def show_status(changes: list[StatusChange]) -> list[str]:
    out = []
    for c in changes:
        text = f"{day_to_date(c.day)} {c.status.name}"
        if c.until != DAY_NONE:
            text += f" {day_to_date(c.until)}"
        out.append(text)
    return out


def show_points(points: list[tuple[int, int]]) -> list[str]:
    return [f"{day_to_date(d)} {t}" for d, t in points]


@dataclass
class Case:
    name: str
    events: list[Row]
    status: list[str]
    points: list[str] | None = None
    policy: str = "national"
    registry: list[str] = field(default_factory=list)
    closed: list[str] | None = None  # "registered_on -> ends_on" of the registrations closed


CASES = [
    # --- accumulation and WARNED -----------------------------------------
    Case("below warn: points only", [score("E1", 3, "2024-03-01")], [], ["2024-03-01 3"]),
    Case(
        "warn at 6, ends on 1 January",
        [score("E1", 6, "2024-03-01")],
        ["2024-03-01 WARNED", "2025-01-01 ACTIVE"],
        ["2024-03-01 6"],
    ),
    Case(
        "points from all institutions add up on the one person",
        [
            score("E1", 3, "2024-01-10", inst="H11010500001"),
            score("E2", 3, "2024-02-10", inst="P11010500009"),
        ],
        ["2024-02-10 WARNED", "2025-01-01 ACTIVE"],
        ["2024-01-10 3", "2024-02-10 6"],
    ),
    Case(
        "calendar year: 5 in December and 5 in January never add up",
        [score("E1", 5, "2024-12-01"), score("E2", 5, "2025-01-15")],
        [],
        ["2024-12-01 5", "2025-01-15 5"],
    ),
    # --- suspension --------------------------------------------------------
    Case(
        "national: suspension_months of the event; WARNED after it (total still 9)",
        [score("E1", 9, "2024-03-15", 2)],
        ["2024-03-15 SUSPENDED 2024-05-14", "2024-05-15 WARNED", "2025-01-01 ACTIVE"],
        ["2024-03-15 9"],
    ),
    Case(
        "month clamp: from 31 Jan 2023, 1 month covers 31 Jan..27 Feb",
        [score("E1", 9, "2023-01-31", 1)],
        ["2023-01-31 SUSPENDED 2023-02-27", "2023-02-28 WARNED", "2024-01-01 ACTIVE"],
    ),
    Case(
        "month clamp in a leap year: 31 Jan 2024 + 1 month = 29 Feb",
        [score("E1", 9, "2024-01-31", 1)],
        ["2024-01-31 SUSPENDED 2024-02-28", "2024-02-29 WARNED", "2025-01-01 ACTIVE"],
    ),
    Case(
        "accumulated: the event that reaches 9 suspends, with its own months",
        [score("E1", 5, "2024-01-10", 6), score("E2", 4, "2024-03-01", 1)],
        [
            "2024-03-01 SUSPENDED 2024-03-31",
            "2024-04-01 WARNED",
            "2025-01-01 ACTIVE",
        ],
        ["2024-01-10 5", "2024-03-01 9"],
    ),
    Case(
        "jiangxi: year total 9 -> 1 month",
        [score("E1", 5, "2024-01-10"), score("E2", 4, "2024-03-01")],
        [
            "2024-03-01 SUSPENDED 2024-03-31",
            "2024-04-01 WARNED",
            "2025-01-01 ACTIVE",
        ],
        policy="jiangxi",
    ),
    Case(
        "jiangxi: year total 10 -> 3 months",
        [score("E1", 5, "2024-01-10"), score("E2", 5, "2024-03-01")],
        [
            "2024-03-01 SUSPENDED 2024-05-31",
            "2024-06-01 WARNED",
            "2025-01-01 ACTIVE",
        ],
        policy="jiangxi",
    ),
    Case(
        "jiangxi: year total 11 -> 5 months (suspension_months in the file is ignored)",
        [score("E1", 4, "2024-01-10"), score("E2", 7, "2024-03-01", 1)],
        ["2024-03-01 SUSPENDED 2024-07-31", "2024-08-01 WARNED", "2025-01-01 ACTIVE"],
        policy="jiangxi",
    ),
    Case(
        "jiangxi: one event alone carrying 9 -> 2 months",
        [score("E1", 9, "2024-03-01")],
        ["2024-03-01 SUSPENDED 2024-04-30", "2024-05-01 WARNED", "2025-01-01 ACTIVE"],
        policy="jiangxi",
    ),
    Case(
        "jiangxi: one event alone carrying 10 -> 4 months",
        [score("E1", 10, "2024-03-01")],
        ["2024-03-01 SUSPENDED 2024-06-30", "2024-07-01 WARNED", "2025-01-01 ACTIVE"],
        policy="jiangxi",
    ),
    Case(
        "jiangxi: one event alone carrying 11 -> 6 months",
        [score("E1", 11, "2024-03-01")],
        ["2024-03-01 SUSPENDED 2024-08-31", "2024-09-01 WARNED", "2025-01-01 ACTIVE"],
        policy="jiangxi",
    ),
    Case(
        "jiangxi: 2 then a 9-point event -> total 11: the longer of 5 (total) and 2 (single)",
        [score("E1", 2, "2024-01-10"), score("E2", 9, "2024-03-01")],
        ["2024-03-01 SUSPENDED 2024-07-31", "2024-08-01 WARNED", "2025-01-01 ACTIVE"],
        policy="jiangxi",
    ),
    Case(
        "open case: a new event during a suspension extends it to the later end",
        [score("E1", 9, "2024-03-01", 1), score("E2", 1, "2024-03-15", 3)],
        ["2024-03-01 SUSPENDED 2024-06-14", "2024-06-15 WARNED", "2025-01-01 ACTIVE"],
        ["2024-03-01 9", "2024-03-15 10"],
    ),
    Case(
        "open case: a new event whose period ends earlier never shortens the suspension",
        [score("E1", 9, "2024-03-01", 6), score("E2", 1, "2024-03-15", 1)],
        ["2024-03-01 SUSPENDED 2024-08-31", "2024-09-01 WARNED", "2025-01-01 ACTIVE"],
    ),
    Case(
        "crossing: jiangxi, 9 -> 10 during the suspension, no suspension_months: no new one",
        [score("E1", 9, "2024-03-01"), score("E2", 1, "2024-03-15")],
        ["2024-03-01 SUSPENDED 2024-04-30", "2024-05-01 WARNED", "2025-01-01 ACTIVE"],
        policy="jiangxi",
    ),
    Case(
        "crossing: jiangxi, 9 -> 10 with suspension_months: a new one, the table's 3 months",
        [score("E1", 9, "2024-03-01"), score("E2", 1, "2024-03-15", 1)],
        ["2024-03-01 SUSPENDED 2024-06-14", "2024-06-15 WARNED", "2025-01-01 ACTIVE"],
        policy="jiangxi",
    ),
    Case(
        "crossing: 9 -> 10 after a served suspension, with suspension_months: suspended again",
        [score("E1", 9, "2024-03-01", 1), score("E2", 1, "2024-06-01", 2)],
        [
            "2024-03-01 SUSPENDED 2024-03-31",
            "2024-04-01 WARNED",
            "2024-06-01 SUSPENDED 2024-07-31",
            "2024-08-01 WARNED",
            "2025-01-01 ACTIVE",
        ],
        ["2024-03-01 9", "2024-06-01 10"],
    ),
    Case(
        "crossing: 9 -> 10 after a served suspension, without suspension_months: WARNED",
        [score("E1", 9, "2024-03-01", 1), score("E2", 1, "2024-06-01")],
        ["2024-03-01 SUSPENDED 2024-03-31", "2024-04-01 WARNED", "2025-01-01 ACTIVE"],
        ["2024-03-01 9", "2024-06-01 10"],
    ),
    Case(
        "crossing: back to 9 after a REPAIR, same year, no suspension_months: WARNED",
        [
            score("E1", 9, "2024-03-01", 1),
            repair("R1", 4, "2024-05-01"),
            score("E2", 4, "2024-06-01"),
        ],
        [
            "2024-03-01 SUSPENDED 2024-03-31",
            "2024-04-01 WARNED",
            "2024-05-01 ACTIVE",
            "2024-06-01 WARNED",
            "2025-01-01 ACTIVE",
        ],
        ["2024-03-01 9", "2024-05-01 5", "2024-06-01 9"],
    ),
    Case(
        "crossing: a new year's first suspension needs no earlier one (Dec -> Jan)",
        [score("E1", 9, "2024-11-15", 3), score("E2", 9, "2025-01-20", 1)],
        ["2024-11-15 SUSPENDED 2025-02-19", "2025-02-20 WARNED", "2026-01-01 ACTIVE"],
        ["2024-11-15 9", "2025-01-20 9"],
    ),
    Case(
        "suspensions that touch are one run: one change point with the run's end",
        [score("E1", 9, "2024-03-01", 1), score("E2", 1, "2024-04-01", 1)],
        ["2024-03-01 SUSPENDED 2024-04-30", "2024-05-01 WARNED", "2025-01-01 ACTIVE"],
    ),
    Case(
        "open case: a suspension across 31 December continues; the total resets",
        [score("E1", 9, "2024-11-15", 3)],
        ["2024-11-15 SUSPENDED 2025-02-14", "2025-02-15 ACTIVE"],
        ["2024-11-15 9"],
    ),
    Case(
        "open case: a suspension across 31 December, new points in January",
        [score("E1", 9, "2024-11-15", 3), score("E2", 6, "2025-01-20")],
        ["2024-11-15 SUSPENDED 2025-02-14", "2025-02-15 WARNED", "2026-01-01 ACTIVE"],
        ["2024-11-15 9", "2025-01-20 6"],
    ),
    # --- termination and re-registration -----------------------------------
    Case(
        "accumulated 12: terminated; 1-year bar; re-registered on the bar's end",
        [score("E1", 6, "2024-02-01"), score("E2", 6, "2024-05-01")],
        ["2024-02-01 WARNED", "2024-05-01 TERMINATED", "2025-05-01 ACTIVE"],
        ["2024-02-01 6", "2024-05-01 12"],
        registry=["2020-01-01", "2025-05-01"],
        closed=["2020-01-01 -> 2024-05-01"],
    ),
    Case(
        "one case of 7 + 5 points (one case_id): 一次性记满, 3-year bar",
        [
            score("E1", 7, "2024-03-01", case="K1"),
            score("E2", 5, "2024-03-01", case="K1"),
        ],
        ["2024-03-01 TERMINATED", "2027-03-01 ACTIVE"],
        ["2024-03-01 12"],
        registry=["2020-01-01", "2027-03-01"],
        closed=["2020-01-01 -> 2024-03-01"],
    ),
    Case(
        "the same 7 + 5 points as two cases: 累计记满, 1-year bar",
        [
            score("E1", 7, "2024-03-01", case="K1"),
            score("E2", 5, "2024-03-01", case="K2"),
        ],
        ["2024-03-01 TERMINATED", "2025-03-01 ACTIVE"],
        ["2024-03-01 12"],
        registry=["2020-01-01", "2025-03-01"],
        closed=["2020-01-01 -> 2024-03-01"],
    ),
    Case(
        "one case over two days (7, then 5 a month later): 3-year bar from the second",
        [
            score("E1", 7, "2024-03-01", 1, case="K1"),
            score("E0", 3, "2024-02-01"),
            score("E2", 5, "2024-04-01", case="K1"),
        ],
        ["2024-03-01 SUSPENDED 2024-03-31", "2024-04-01 TERMINATED", "2027-04-01 ACTIVE"],
        ["2024-02-01 3", "2024-03-01 10", "2024-04-01 15"],
        registry=["2027-04-01"],
    ),
    Case(
        "termination ends registrations that began before it, open or not; later ones stay",
        [score("E1", 12, "2024-02-01"), shorten("S1", "2024-06-01")],
        ["2024-02-01 TERMINATED", "2024-07-01 ACTIVE"],
        registry=["2015-03-01", "2020-01-01", "2024-02-01", "2024-07-01"],
        closed=[
            "2015-03-01 -> 2024-02-01",
            "2020-01-01 -> 2024-02-01",
            "2024-02-01 -> 2024-02-02",
        ],
    ),
    Case(
        "single 12-point event: 3-year bar from 29 Feb 2024 ends 27 Feb 2027",
        [score("E1", 12, "2024-02-29")],
        ["2024-02-29 TERMINATED", "2027-02-28 ACTIVE"],
        registry=["2027-02-28"],
    ),
    Case(
        "no re-registration: terminated for good (registry records before it change nothing)",
        [score("E1", 12, "2024-02-01")],
        ["2024-02-01 TERMINATED"],
        registry=["2020-01-01", "2023-06-01"],
    ),
    Case(
        "a registry record on the termination day is an earlier registration",
        [score("E1", 12, "2024-02-01")],
        ["2024-02-01 TERMINATED"],
        registry=["2024-02-01"],
    ),
    Case(
        "open case: reaching 12 while suspended: the suspension ends the day before",
        [score("E1", 9, "2024-03-01", 6), score("E2", 3, "2024-04-10")],
        ["2024-03-01 SUSPENDED 2024-04-09", "2024-04-10 TERMINATED"],
        ["2024-03-01 9", "2024-04-10 12"],
    ),
    Case(
        "a day settles as one: 3 and 9 points the same day reach 12: TERMINATED, no suspension",
        [score("E2", 3, "2024-03-01"), score("E1", 9, "2024-03-01", 2)],
        ["2024-03-01 TERMINATED"],
        ["2024-03-01 12"],
    ),
    Case(
        "terminated: a further SCORE to >= 12 extends the bar from its own date",
        [score("E1", 6, "2024-03-01"), score("E2", 6, "2024-03-01"), score("E3", 2, "2024-06-01")],
        ["2024-03-01 TERMINATED", "2025-06-01 ACTIVE"],
        ["2024-03-01 12", "2024-06-01 14"],
        registry=["2025-06-01"],
    ),
    Case(
        "re-registration resets the year total: the same-year SCORE counts from 0",
        [score("E1", 12, "2024-01-10"), shorten("S1", "2024-03-01"), score("E2", 6, "2024-05-01")],
        ["2024-01-10 TERMINATED", "2024-04-01 ACTIVE", "2024-05-01 WARNED", "2025-01-01 ACTIVE"],
        ["2024-01-10 12", "2024-04-01 0", "2024-05-01 6"],
        registry=["2024-04-01"],
    ),
    Case(
        "SHORTEN the bar: re-registration allowed from its effective_on",
        [score("E1", 12, "2024-02-01"), shorten("S1", "2025-06-01")],
        ["2024-02-01 TERMINATED", "2025-06-01 ACTIVE"],
        registry=["2025-06-01"],
    ),
    Case(
        "SCOREs while terminated below 12 (a new year) only add points",
        [score("E1", 12, "2024-02-01"), score("E2", 9, "2025-03-01", 6)],
        ["2024-02-01 TERMINATED"],
        ["2024-02-01 12", "2025-03-01 9"],
    ),
    # --- REPAIR, SHORTEN ---------------------------------------------------
    Case(
        "REPAIR never retroactive: WARNED until the repair",
        [score("E1", 7, "2024-03-01"), repair("R1", 2, "2024-05-01")],
        ["2024-03-01 WARNED", "2024-05-01 ACTIVE"],
        ["2024-03-01 7", "2024-05-01 5"],
    ),
    Case(
        "open case: a REPAIR larger than the total leaves 0",
        [score("E1", 4, "2024-03-01"), repair("R1", 10, "2024-05-01")],
        [],
        ["2024-03-01 4", "2024-05-01 0"],
    ),
    Case(
        "REPAIR does not end a running suspension (ACTIVE after it: total 4)",
        [score("E1", 9, "2024-03-01", 3), repair("R1", 5, "2024-04-01")],
        ["2024-03-01 SUSPENDED 2024-05-31", "2024-06-01 ACTIVE"],
        ["2024-03-01 9", "2024-04-01 4"],
    ),
    Case(
        "REPAIR in a later year has nothing to subtract",
        [score("E1", 7, "2024-03-01"), repair("R1", 3, "2025-02-01")],
        ["2024-03-01 WARNED", "2025-01-01 ACTIVE"],
        ["2024-03-01 7"],
    ),
    Case(
        "REPAIR then SCORE: below 9 again, so no suspension",
        [
            score("E1", 8, "2024-03-01"),
            repair("R1", 3, "2024-04-01"),
            score("E2", 3, "2024-05-01", 2),
        ],
        ["2024-03-01 WARNED", "2024-04-01 ACTIVE", "2024-05-01 WARNED", "2025-01-01 ACTIVE"],
        ["2024-03-01 8", "2024-04-01 5", "2024-05-01 8"],
    ),
    Case(
        "SHORTEN ends the running suspension the day before its effective_on",
        [score("E1", 9, "2024-03-01", 6), shorten("S1", "2024-04-15")],
        ["2024-03-01 SUSPENDED 2024-04-14", "2024-04-15 WARNED", "2025-01-01 ACTIVE"],
    ),
    Case(
        "SHORTEN with nothing running does nothing",
        [shorten("S1", "2024-02-01"), score("E1", 9, "2024-03-01", 1)],
        ["2024-03-01 SUSPENDED 2024-03-31", "2024-04-01 WARNED", "2025-01-01 ACTIVE"],
    ),
    Case(
        "SHORTEN on a suspension's first day cancels it (WARNED: total 9)",
        [score("E1", 9, "2024-03-01", 1), shorten("A0", "2024-03-01")],
        ["2024-03-01 WARNED", "2025-01-01 ACTIVE"],
        ["2024-03-01 9"],
    ),
    Case(
        "SHORTEN before a suspension's first day does nothing; the suspension runs",
        [score("E1", 9, "2024-03-01", 1), shorten("A0", "2024-02-29")],
        ["2024-03-01 SUSPENDED 2024-03-31", "2024-04-01 WARNED", "2025-01-01 ACTIVE"],
    ),
    Case(
        "SHORTEN on the day a running suspension is extended: it ends the day before",
        [
            score("E1", 9, "2024-03-01", 3),
            score("E2", 1, "2024-04-01", 6),
            shorten("S1", "2024-04-01"),
        ],
        ["2024-03-01 SUSPENDED 2024-03-31", "2024-04-01 WARNED", "2025-01-01 ACTIVE"],
    ),
    Case(
        "SHORTEN on a termination's day: the bar is gone, re-registration from the next day",
        [score("E1", 12, "2024-02-01"), shorten("S1", "2024-02-01")],
        ["2024-02-01 TERMINATED", "2024-02-02 ACTIVE"],
        registry=["2024-02-02"],
    ),
    # --- REVOKE ------------------------------------------------------------
    Case(
        "open case: REVOKE of the event that triggered a suspension",
        [
            score("E1", 5, "2024-01-10"),
            score("E2", 4, "2024-03-01", 2),
            revoke("V1", "E2", "2024-06-01"),
        ],
        [],
        ["2024-01-10 5"],
    ),
    Case(
        "REVOKE of the trigger: a later event now triggers, with its own months",
        [
            score("E1", 5, "2024-01-10"),
            score("E2", 4, "2024-03-01", 2),
            score("E3", 4, "2024-05-01", 1),
            revoke("V1", "E2", "2024-06-01"),
        ],
        ["2024-05-01 SUSPENDED 2024-05-31", "2024-06-01 WARNED", "2025-01-01 ACTIVE"],
        ["2024-01-10 5", "2024-05-01 9"],
    ),
    Case(
        "REVOKE of the terminating event: back to the suspension it superseded",
        [
            score("E1", 9, "2024-03-01", 6),
            score("E2", 3, "2024-04-10"),
            revoke("V1", "E2", "2024-05-01"),
        ],
        ["2024-03-01 SUSPENDED 2024-08-31", "2024-09-01 WARNED", "2025-01-01 ACTIVE"],
    ),
    Case(
        "open case: REVOKE of a REVOKE reinstates the event",
        [
            score("E1", 6, "2024-03-01"),
            revoke("V1", "E1", "2024-04-01"),
            revoke("V2", "V1", "2024-05-01"),
        ],
        ["2024-03-01 WARNED", "2025-01-01 ACTIVE"],
    ),
    Case(
        "a REVOKE of a REVOKE of a REVOKE: the event is revoked again",
        [
            score("E1", 6, "2024-03-01"),
            revoke("V1", "E1", "2024-04-01"),
            revoke("V2", "V1", "2024-05-01"),
            revoke("V3", "V2", "2024-06-01"),
        ],
        [],
        [],
    ),
    Case(
        "a practitioner whose only event is revoked stays ACTIVE",
        [score("E1", 9, "2024-03-01", 1), revoke("V1", "E1", "2024-04-01")],
        [],
        [],
    ),
    # --- order -------------------------------------------------------------
    Case(
        "open case: lines out of date order replay by date",
        [
            score("E3", 3, "2024-05-01", 2),
            score("E2", 3, "2024-03-01"),
            score("E1", 3, "2024-01-10"),
        ],
        [
            "2024-03-01 WARNED",
            "2024-05-01 SUSPENDED 2024-06-30",
            "2024-07-01 WARNED",
            "2025-01-01 ACTIVE",
        ],
        ["2024-01-10 3", "2024-03-01 6", "2024-05-01 9"],
    ),
    # --- a day settles as one (whatever the ids and the line order) ----------
    Case(
        "same day: 3 points with 6 months and 6 with 1 month: the longest, 6 months",
        [score("E9", 3, "2024-03-01", 6), score("E10", 6, "2024-03-01", 1)],
        ["2024-03-01 SUSPENDED 2024-08-31", "2024-09-01 WARNED", "2025-01-01 ACTIVE"],
        ["2024-03-01 9"],
    ),
    Case(
        "same day, the ids the other way round: still 6 months",
        [score("E10", 3, "2024-03-01", 6), score("E9", 6, "2024-03-01", 1)],
        ["2024-03-01 SUSPENDED 2024-08-31", "2024-09-01 WARNED", "2025-01-01 ACTIVE"],
        ["2024-03-01 9"],
    ),
    Case(
        "same day: total 3, then a REPAIR of 3 and a SCORE of 6: total 6, WARNED",
        [
            score("E0", 3, "2024-02-01"),
            repair("E2", 3, "2024-03-01"),
            score("E1", 6, "2024-03-01", 1),
        ],
        ["2024-03-01 WARNED", "2025-01-01 ACTIVE"],
        ["2024-02-01 3", "2024-03-01 6"],
    ),
    Case(
        "same day, the ids the other way round: still 6, WARNED",
        [
            score("E0", 3, "2024-02-01"),
            repair("E1", 3, "2024-03-01"),
            score("E2", 6, "2024-03-01", 1),
        ],
        ["2024-03-01 WARNED", "2025-01-01 ACTIVE"],
        ["2024-02-01 3", "2024-03-01 6"],
    ),
    Case(
        "same day: the net change, never below 0 (3 + 6 - 10 = 0)",
        [
            score("E0", 3, "2024-02-01"),
            score("E1", 6, "2024-03-01"),
            repair("E2", 10, "2024-03-01"),
        ],
        [],
        ["2024-02-01 3", "2024-03-01 0"],
    ),
    Case(
        "jiangxi: one case of 5 + 4 points the same day: 单次 9 -> 2 months",
        [score("E1", 5, "2024-03-01", case="K1"), score("E2", 4, "2024-03-01", case="K1")],
        ["2024-03-01 SUSPENDED 2024-04-30", "2024-05-01 WARNED", "2025-01-01 ACTIVE"],
        policy="jiangxi",
    ),
    Case(
        "jiangxi: the same points as two cases: year total 9 -> 1 month",
        [score("E1", 5, "2024-03-01"), score("E2", 4, "2024-03-01")],
        ["2024-03-01 SUSPENDED 2024-03-31", "2024-04-01 WARNED", "2025-01-01 ACTIVE"],
        policy="jiangxi",
    ),
    Case(
        "one points change point a day: SCORE and REPAIR cancelling out write none",
        [score("E1", 3, "2024-02-01"), score("E2", 4, "2024-03-01"), repair("E3", 4, "2024-03-01")],
        [],
        ["2024-02-01 3"],
    ),
]


def _result(case: Case, rows: list[Row], fast_path: bool = True) -> PointsResult:
    return derive_statuses(
        ledger_of(rows, case.policy),
        load_policy(case.policy),
        registry_of(case.registry),
        fast_path=fast_path,
    )


def show_closed(result: PointsResult, registry: list[str]) -> list[str]:
    return [
        f"{registry[row]} -> {day_to_date(day)}"
        for row, day in zip(result.closed_rows.tolist(), result.closed_on.tolist(), strict=True)
    ]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_worked_example(case: Case) -> None:
    key = encode_practitioner(P)
    result = _result(case, case.events)
    assert show_status(result.status_changes(key)) == case.status
    if case.points is not None:
        assert show_points(result.points_changes(key)) == case.points
    if case.closed is not None:
        assert show_closed(result, case.registry) == case.closed
    # The same ledger in reverse file order, renamed, and without the fast path.
    for other in (
        _result(case, case.events[::-1]),
        _result(case, renamed(case.events)),
        _result(case, renamed(case.events)[::-1]),
        _result(case, case.events, False),
    ):
        assert other.status_changes(key) == result.status_changes(key)
        assert other.points_changes(key) == result.points_changes(key)
        assert show_closed(other, case.registry) == show_closed(result, case.registry)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_explanation_names_a_cause_for_every_change(case: Case) -> None:
    policy = load_policy(case.policy)
    ledger = ledger_of(case.events, case.policy)
    ex = explain_practitioner(ledger, policy, registry_of(case.registry), P)
    assert show_status(ex.trace.replay.status_changes) == case.status
    assert all(causes for causes in ex.trace.causes)
    text = ex.text()
    for line in case.status:
        assert line.split()[1] in text


def test_explanation_text_names_events_and_revocations() -> None:
    rows = [
        score("E1", 5, "2024-01-10"),
        score("E2", 4, "2024-03-01", 2),
        revoke("V1", "E2", "2024-06-01"),
        score("E3", 4, "2024-05-01", 1),
    ]
    text = explain_practitioner(ledger_of(rows), load_policy("national"), None, P).text()
    assert "E3 SCORE +4, suspension_months 1 [ledger.csv:5]" in text
    assert (
        "day settled: total 5 → 9 after SCORE E3; total 9 >= 9, the first suspension of "
        "2024: 1 month(s) (suspension_months of E3) -> SUSPENDED 2024-05-01 .. 2024-05-31"
    ) in text
    assert "E2 SCORE revoked (appeal upheld): ignored [ledger.csv:3]" in text
    assert "V1 REVOKE of E2 (line 3) [ledger.csv:4]" in text
    assert "from 2024-05-01  SUSPENDED until 2024-05-31" in text
    assert "suspension ended on 2024-05-31: suspension by E3 (ledger.csv:5) served" in text


# --- errors ----------------------------------------------------------------


def test_registry_record_inside_the_accumulated_bar_is_refused() -> None:
    rows = [score("E1", 6, "2024-02-01"), score("E2", 6, "2024-05-01")]
    with pytest.raises(LoadError) as err:
        derive_statuses(
            ledger_of(rows), load_policy("national"), registry_of(["2020-01-01", "2025-04-30"])
        )
    e = err.value
    assert (e.file, e.line, e.field) == ("registry.csv", 3, "registered_on")
    assert "2025-04-30 is inside the re-registration bar" in e.reason
    assert "termination on 2024-05-01 by E2 (ledger.csv:3)" in e.reason
    assert "1-year bar (累计记满" in e.reason
    assert "barred until 2025-04-30 (re-registration allowed from 2025-05-01)" in e.reason


def test_registry_record_inside_the_single_event_bar_is_refused() -> None:
    with pytest.raises(LoadError) as err:
        derive_statuses(
            ledger_of([score("E1", 12, "2024-02-29")]),
            load_policy("national"),
            registry_of(["2027-02-27"]),
        )
    assert "3-year bar (一次性记满: 12 points in one case, E1)" in err.value.reason
    assert "allowed from 2027-02-28" in err.value.reason


def test_registry_record_inside_an_extended_bar_is_refused() -> None:
    rows = [
        score("E1", 6, "2024-03-01"),
        score("E2", 2, "2024-06-01"),
        score("E0", 6, "2024-03-01"),
    ]
    with pytest.raises(LoadError) as err:
        derive_statuses(ledger_of(rows), load_policy("national"), registry_of(["2025-03-15"]))
    assert "by E2 (ledger.csv:3)" in err.value.reason
    assert "allowed from 2025-06-01" in err.value.reason


def test_bar_violations_can_be_collected_without_raising() -> None:
    result = derive_statuses(
        ledger_of([score("E1", 12, "2024-02-01")]),
        load_policy("national"),
        registry_of(["2024-06-01", "2025-06-01"]),
        check_registry=False,
    )
    assert [v.registry_line for v in result.violations] == [2, 3]
    assert show_status(result.status_changes(encode_practitioner(P))) == ["2024-02-01 TERMINATED"]


def test_national_suspending_event_without_months_is_refused() -> None:
    rows = [score("E1", 5, "2024-01-10"), score("E2", 4, "2024-03-01")]
    with pytest.raises(LoadError) as err:
        derive_statuses(ledger_of(rows), load_policy("national"))
    e = err.value
    assert (e.file, e.line, e.field) == ("ledger.csv", 3, "suspension_months")
    assert "event E2 brings the 2024 total to 9" in e.reason


def test_national_non_suspending_events_need_no_months() -> None:
    rows = [score("E1", 5, "2024-01-10"), score("E2", 7, "2024-03-01")]
    result = derive_statuses(ledger_of(rows), load_policy("national"))
    assert show_status(result.status_changes(encode_practitioner(P))) == ["2024-03-01 TERMINATED"]


@pytest.mark.parametrize(
    ("rows", "line", "reason"),
    [
        ([revoke("V1", "E9", "2024-01-01")], 2, "REVOKE of unknown event_id 'E9'"),
        (
            [score("E1", 3, "2024-01-01", who=Q), revoke("V1", "E1", "2024-02-01")],
            3,
            "REVOKE V1 is for another practitioner than E1 (line 2)",
        ),
        ([revoke("V1", "V1", "2024-01-01")], 2, "REVOKE V1 revokes itself"),
        ([revoke("V1", "V2", "2024-01-01"), revoke("V2", "V1", "2024-01-01")], 2, "REVOKE cycle: "),
    ],
)
def test_bad_revokes_are_refused(rows: list[Row], line: int, reason: str) -> None:
    with pytest.raises(LoadError) as err:
        ledger_of(rows)
    assert (err.value.line, err.value.field) == (line, "reference")
    assert reason in err.value.reason


# --- the whole-ledger result -------------------------------------------------


def test_result_arrays_for_publishing() -> None:
    rows = [
        score("E1", 9, "2024-03-15", 2),
        score("E2", 3, "2024-01-01", who=Q),
        score("E3", 5, "2024-01-02", who=Q),
        repair("E4", 6, "2024-02-02", who=Q),
    ]
    result = derive_statuses(ledger_of(rows), load_policy("national"))
    p, q = encode_practitioner(P), encode_practitioner(Q)
    assert result.practitioners.tolist() == sorted([p, q])
    keys = np.repeat(result.practitioners, np.diff(result.st_offsets))
    day, status, until = result.st_day, result.st_status, result.st_until
    assert keys.dtype == np.uint64 and day.dtype == np.uint16
    assert status.dtype == np.uint8 and until.dtype == np.uint16
    got = sorted(zip(keys.tolist(), day.tolist(), status.tolist(), until.tolist(), strict=True))
    d = iso_to_day
    assert got == sorted(
        [
            (p, d("2024-03-15"), Status.SUSPENDED, d("2024-05-14")),
            (p, d("2024-05-15"), Status.WARNED, DAY_NONE),
            (p, d("2025-01-01"), Status.ACTIVE, DAY_NONE),
            (q, d("2024-01-02"), Status.WARNED, DAY_NONE),
            (q, d("2024-02-02"), Status.ACTIVE, DAY_NONE),
        ]
    )
    pkeys = np.repeat(result.practitioners, np.diff(result.pt_offsets))
    pday, ppoints = result.pt_day, result.pt_points
    assert ppoints.dtype == np.uint16
    assert list(zip(pkeys.tolist(), pday.tolist(), ppoints.tolist(), strict=True)) == sorted(
        [
            (p, d("2024-03-15"), 9),
            (q, d("2024-01-01"), 3),
            (q, d("2024-01-02"), 8),
            (q, d("2024-02-02"), 2),
        ]
    )
    # Keys, then days, strictly increasing: what contract.snapshot requires.
    assert np.all(np.diff(keys.astype(np.int64)) >= 0)
    assert result.status_changes(encode_practitioner("D999999999999")) == []


def test_empty_ledger() -> None:
    result = derive_statuses(ledger_of([]), load_policy("national"))
    assert len(result.practitioners) == 0
    assert result.st_offsets.tolist() == [0] and result.pt_offsets.tolist() == [0]


def test_last_days_of_the_day_range() -> None:
    # A suspension ending past 2149-06-04 is stored as MAX_DAY, with no point after it.
    result = derive_statuses(ledger_of([score("E1", 9, "2149-05-01", 6)]), load_policy("national"))
    [change] = result.status_changes(encode_practitioner(P))
    assert (change.status, change.until) == (Status.SUSPENDED, MAX_DAY)


@pytest.mark.parametrize(
    ("start", "months", "end"),
    [
        ("2023-01-31", 1, "2023-02-28"),
        ("2024-01-31", 1, "2024-02-29"),
        ("2024-03-31", 1, "2024-04-30"),
        ("2024-08-31", 6, "2025-02-28"),
        ("2024-12-15", 1, "2025-01-15"),
        ("2024-07-01", 6, "2025-01-01"),
    ],
)
def test_add_months_clamps_to_the_month_end(start: str, months: int, end: str) -> None:
    assert add_months(iso_to_day(start), months) == iso_to_day(end)
    assert suspension_until(iso_to_day(start), months) == iso_to_day(end) - 1


def test_add_years_clamps_29_february() -> None:
    assert add_years(iso_to_day("2024-02-29"), 1) == iso_to_day("2025-02-28")
    assert add_years(iso_to_day("2024-02-29"), 4) == iso_to_day("2028-02-29")
    assert add_years(iso_to_day("2024-05-01"), 3) == iso_to_day("2027-05-01")


def test_a_lone_suspending_event_without_months_is_refused_too() -> None:
    # The numpy fast path must leave it to the replay, which reports it.
    with pytest.raises(LoadError) as err:
        derive_statuses(ledger_of([score("E1", 10, "2024-03-01")]), load_policy("national"))
    assert (err.value.line, err.value.field) == (2, "suspension_months")


def test_add_months_array_matches_add_months() -> None:
    days = np.arange(iso_to_day("2023-01-01"), iso_to_day("2025-01-01"), dtype=np.int64)
    for months in range(1, 13):
        got = add_months_array(days, np.full(len(days), months, dtype=np.int64))
        assert got.tolist() == [add_months(d, months) for d in days.tolist()]


def test_dicts_for_the_snapshot_build() -> None:
    rows = [
        score("E1", 9, "2024-03-15", 2),
        score("E2", 3, "2024-01-01", who=Q),
        revoke("V1", "E2", "2024-02-01", who=Q),
    ]
    result = derive_statuses(ledger_of(rows), load_policy("national"))
    p = encode_practitioner(P)
    d = iso_to_day
    # Q's only event is revoked: nothing to publish for Q.
    assert result.timelines() == {
        p: [
            StatusChange(d("2024-03-15"), Status.SUSPENDED, d("2024-05-14")),
            StatusChange(d("2024-05-15"), Status.WARNED),
            StatusChange(d("2025-01-01"), Status.ACTIVE),
        ]
    }
    assert result.points_timelines() == {p: [(d("2024-03-15"), 9)]}


def test_registry_order_does_not_matter() -> None:
    rows = [score("E1", 12, "2024-02-01"), score("E2", 12, "2024-02-01", who=Q)]
    dates = ["2027-02-01", "2020-01-01", "2028-01-01"]
    keys = [encode_practitioner(Q), encode_practitioner(P), encode_practitioner(P)]
    registry = RegistrationStarts(
        "registry.csv",
        np.array(keys, dtype=np.uint64),
        np.array([iso_to_day(x) for x in dates], dtype=np.uint16),
        np.array([2, 3, 4], dtype=np.int64),
    )
    order = np.array([1, 2, 0])  # sorted by practitioner: the binary-search path
    ordered = RegistrationStarts(
        "registry.csv",
        registry.practitioner[order],
        registry.registered_on[order],
        registry.line[order],
    )
    a = derive_statuses(ledger_of(rows), load_policy("national"), registry)
    b = derive_statuses(ledger_of(rows), load_policy("national"), ordered)
    assert a.timelines() == b.timelines()
    assert show_status(a.status_changes(encode_practitioner(P))) == [
        "2024-02-01 TERMINATED",
        "2028-01-01 ACTIVE",
    ]
    assert show_status(a.status_changes(encode_practitioner(Q))) == [
        "2024-02-01 TERMINATED",
        "2027-02-01 ACTIVE",
    ]


def test_explanation_of_a_re_registration() -> None:
    rows = [
        score("E1", 9, "2024-01-31", 1),
        score("E2", 3, "2024-02-10"),
        shorten("E3", "2024-06-01"),
    ]
    ex = explain_practitioner(
        ledger_of(rows), load_policy("national"), registry_of(["2020-01-01", "2024-07-01"]), P
    )
    text = ex.text()
    assert "from 2024-01-31  SUSPENDED until 2024-02-09" in text
    assert "suspension ended on 2024-02-09: superseded by the termination by E2" in text
    assert (
        "E3 SHORTEN: the re-registration bar ends the day before: allowed from 2024-06-01 "
        "[ledger.csv:4]"
    ) in text
    assert (
        "registration from 2020-01-01 (open) ended by the termination: no longer registered "
        "from 2024-02-10 [registry.csv:2]"
    ) in text
    assert "re-registered: the termination ends, year total reset to 0 [registry.csv:3]" in text
    assert "from 2024-07-01  ACTIVE" in text


def _trail_text(rows: list[Row], policy: str = "national") -> str:
    ledger = ledger_of(rows, policy)
    return explain_practitioner(ledger, load_policy(policy), None, P).text()


def test_the_trail_shows_each_days_settlement_whatever_the_ids() -> None:
    rows = [
        score("E0", 3, "2024-02-01"),
        score("E1", 6, "2024-03-01", 1),
        repair("E2", 3, "2024-03-01"),
    ]
    for ledger in (rows, rows[::-1]):
        text = _trail_text(ledger)
        assert "day settled: total 3 → 6 after REPAIR E2 and SCORE E1; no threshold crossed" in text
    # Natural order in the wording: E9 before E10.
    text = _trail_text([score("E10", 3, "2024-03-01", 6), score("E9", 6, "2024-03-01", 1)])
    assert (
        "day settled: total 0 → 9 after SCORE E9 and SCORE E10; total 9 >= 9, the first "
        "suspension of 2024: 6 month(s) (suspension_months of E10) -> "
        "SUSPENDED 2024-03-01 .. 2024-08-31"
    ) in text


def test_the_trail_says_no_new_suspension_was_decided() -> None:
    text = _trail_text([score("E1", 9, "2024-03-01", 1), score("E2", 1, "2024-06-01")])
    assert (
        "day settled: total 9 → 10 after SCORE E2; total 10 >= 9, but a suspension was "
        "already triggered in 2024 and no SCORE of the day carries suspension_months: "
        "no new suspension"
    ) in text


def test_the_trail_says_a_shorten_cancelled_the_suspension() -> None:
    text = _trail_text([score("E1", 9, "2024-03-01", 1), shorten("S1", "2024-03-01")])
    assert (
        "S1 SHORTEN: the suspension starting on 2024-03-01 is cancelled "
        "(SHORTEN on its first day) [ledger.csv:3]"
    ) in text


def test_the_trail_names_the_case_that_set_a_3_year_bar() -> None:
    rows = [score("E1", 7, "2024-03-01", case="K1"), score("E2", 5, "2024-03-01", case="K1")]
    text = _trail_text(rows)
    assert "E1 SCORE +7, case K1 [ledger.csv:2]" in text
    assert "3-year bar (一次性记满: 12 points in one case, K1)" in text


def test_a_national_first_suspension_day_without_any_months_is_refused() -> None:
    rows = [score("E10", 5, "2024-03-01"), score("E9", 4, "2024-03-01")]
    with pytest.raises(LoadError) as err:
        derive_statuses(ledger_of(rows), load_policy("national"))
    e = err.value
    assert (e.line, e.field) == (2, "suspension_months")
    assert "events E9, E10 of 2024-03-01 bring the 2024 total to 9" in e.reason
    # One of the day's SCOREs carrying a length is enough.
    rows[1] = score("E9", 4, "2024-03-01", 2)
    result = derive_statuses(ledger_of(rows), load_policy("national"))
    assert show_status(result.status_changes(encode_practitioner(P)))[0] == (
        "2024-03-01 SUSPENDED 2024-04-30"
    )
