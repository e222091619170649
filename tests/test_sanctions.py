"""The per-institution share of staff suspended or terminated, on small
snapshots whose answer is worked out by hand."""

from __future__ import annotations

import datetime as dt

from contract.days import date_to_day
from contract.domain import Status
from contract.snapshot import empty_arrays
from gateway.ops.sanctions import InstitutionShare, sanction_shares
from tests.factory import Person, build_arrays
from tests.ops_data import HOSPITAL, OTHER_HOSPITAL, PEOPLE, PHARMACY, TODAY


def test_shares_per_institution_highest_first() -> None:
    shares = sanction_shares(build_arrays(PEOPLE), date_to_day(TODAY))
    assert shares == [
        InstitutionShare(HOSPITAL, staff=3, suspended=1, terminated=1),
        InstitutionShare(OTHER_HOSPITAL, staff=2, suspended=1, terminated=0),
        InstitutionShare(PHARMACY, staff=1, suspended=0, terminated=0),
    ]
    assert round(shares[0].share, 4) == 0.6667
    assert shares[2].share == 0.0


def test_the_status_and_the_registrations_of_the_day_count() -> None:
    before = date_to_day(TODAY - dt.timedelta(days=10))  # before anyone was sanctioned
    assert all(s.sanctioned == 0 for s in sanction_shares(build_arrays(PEOPLE), before))
    people = [
        # Two registration periods at the same hospital covering the day: one person.
        Person("D110105000011", [(HOSPITAL, "2020-01-01", None), (HOSPITAL, "2021-01-01", None)]),
        # Deregistered before the day: not staff any more, even though suspended.
        Person(
            "D110105000012",
            [(HOSPITAL, "2020-01-01", "2021-01-01")],
            [("2022-01-01", Status.SUSPENDED, "2099-01-01")],
        ),
        # Registered after the day: not staff yet.
        Person("D110105000013", [(HOSPITAL, "2024-01-01", None)]),
        # Terminated and at two institutions: counts at both.
        Person(
            "D110105000014",
            [(HOSPITAL, "2020-01-01", None), (OTHER_HOSPITAL, "2020-01-01", None)],
            [("2022-06-01", Status.TERMINATED, None)],
        ),
    ]
    day = date_to_day(dt.date(2023, 1, 1))
    assert sanction_shares(build_arrays(people), day) == [
        InstitutionShare(OTHER_HOSPITAL, staff=1, suspended=0, terminated=1),
        InstitutionShare(HOSPITAL, staff=2, suspended=0, terminated=1),
    ]


def test_an_empty_snapshot_has_no_rows() -> None:
    assert sanction_shares(empty_arrays(), date_to_day(TODAY)) == []
