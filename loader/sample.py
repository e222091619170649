"""A deterministic sample data set: registry and status feed files for demos and tests.

``write_sample(out_dir, practitioners=5000, seed=1)`` writes ``registry.csv``
and ``status.csv`` (or ``.jsonl``) with:

- about 200 institutions: 150 hospitals (``H`` + 11 digits) and 50 pharmacies
  (``P`` + 11 digits) in a few districts;
- ``practitioners`` staff with one- and two-letter codes (D doctor, N nurse,
  HJ technician, HY pharmacy staff), each registered at 1-3 institutions,
  some concurrently (多点执业), some one after the other (moved), some
  deregistered altogether (NOT_REGISTERED today);
- one principal (主要负责人) per pharmacy, a tenth of them suspended;
- status-feed records covering every status: WARNED, SUSPENDED in the past,
  covering today and in the future, TERMINATED, and ACTIVE records that lift
  a suspension early or reinstate a terminated practitioner;
- the FIXED practitioners below, which demos and tests rely on.

Dates are relative to today in China Standard Time (``contract.days``), so the
"current" suspension stays current whenever the sample is generated; given
the same ``today`` and ``seed`` the files are byte-for-byte identical.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from contract.days import today_cst
from loader.ledger import OPTIONAL as LEDGER_OPTIONAL
from loader.ledger import REQUIRED as LEDGER_REQUIRED
from loader.registry import OPTIONAL_FIELDS as REGISTRY_OPTIONAL
from loader.registry import REQUIRED_FIELDS as REGISTRY_REQUIRED
from loader.status_feed import OPTIONAL_FIELDS as STATUS_OPTIONAL
from loader.status_feed import REQUIRED_FIELDS as STATUS_REQUIRED
from loader.tables import FileFormat

REGISTRY_COLUMNS = (*REGISTRY_REQUIRED, *REGISTRY_OPTIONAL)
STATUS_COLUMNS = ("practitioner_code", "status", "effective_from", "effective_until", "reference")
LEDGER_COLUMNS = (*LEDGER_REQUIRED, *LEDGER_OPTIONAL)
assert set(STATUS_COLUMNS) == {*STATUS_REQUIRED, *STATUS_OPTIONAL}

DEFAULT_PRACTITIONERS = 5000
DEFAULT_SEED = 1


@dataclass(frozen=True)
class SampleFixture:
    """Practitioners and institutions every sample contains, with known statuses today.

    Offsets are in days from today (CST); ``until`` offsets are the last day
    of the suspension (inclusive).
    """

    hospital: str = "H11010500001"
    """A hospital where most fixed practitioners are registered."""
    second_hospital: str = "H11010500002"
    pharmacy: str = "P11010500001"
    """A pharmacy whose principal is ACTIVE."""
    pharmacy_with_suspended_principal: str = "P11010500002"
    """A pharmacy whose principal is SUSPENDED today: every line is rejected."""

    active_doctor: str = "D110105000001"
    """ACTIVE, registered at ``hospital`` since 2015."""
    warned_doctor: str = "D110105000002"
    """WARNED (payable) from January 1 of this year to December 31, at ``hospital``."""
    suspended_doctor: str = "D110105000003"
    """SUSPENDED from today-30 to today+60, registered at both hospitals."""
    terminated_doctor: str = "D110105000004"
    """TERMINATED from today-100 on, at ``hospital``."""
    deregistered_doctor: str = "D110105000005"
    """Registered at ``hospital`` from 2010 until today-365: NOT_REGISTERED today."""
    formerly_suspended_nurse: str = "N110105000006"
    """SUSPENDED from today-200 to today-100: ACTIVE today, not payable on past dates."""
    future_suspended_doctor: str = "D110105000007"
    """SUSPENDED from today+10 to today+100: ACTIVE today."""
    second_hospital_doctor: str = "D110105000008"
    """ACTIVE, registered at ``second_hospital`` only (not at ``hospital``)."""
    technician: str = "HJ110105000001"
    """ACTIVE technician at ``hospital``: a two-letter code."""
    active_principal: str = "HY110105000001"
    """ACTIVE principal of ``pharmacy``."""
    suspended_principal: str = "HY110105000002"
    """Principal of ``pharmacy_with_suspended_principal``, SUSPENDED today-10 to today+80."""
    pharmacist: str = "HY110105000003"
    """ACTIVE pharmacy staff at ``pharmacy``."""
    points_warned_doctor: str = "D110105000009"
    """Scoring ledger: 3 + 4 points this year, WARNED (payable)."""
    points_suspended_doctor: str = "D110105000010"
    """Scoring ledger: 6 + 4 points this year, SUSPENDED for 3 months from the second event."""
    points_revoked_doctor: str = "D110105000011"
    """Scoring ledger: a 9-point event revoked on appeal (申诉): ACTIVE."""

    suspended_from_offset: int = -30
    suspended_until_offset: int = 60
    terminated_from_offset: int = -100
    deregistered_offset: int = -365
    past_suspension_offsets: tuple[int, int] = (-200, -100)
    future_suspension_offsets: tuple[int, int] = (10, 100)
    principal_suspension_offsets: tuple[int, int] = (-10, 80)


FIXED = SampleFixture()
FIXTURE_FILE = "fixture.json"

# Administrative division codes of the districts the sample uses.
_DISTRICTS = ("110105", "110108", "310115", "440305", "360102", "510107", "330106", "420106")
_STAFF_KINDS = (("D", "doctor", 45), ("N", "nurse", 30), ("HJ", "technician", 10))
_PHARMACY_STAFF = ("HY", "pharmacist", 15)
_HOSPITALS = 150
_PHARMACIES = 50
# Random codes start above every fixed one, so they never collide; staff
# numbers stay below the principals'.
_FIRST_RANDOM_INSTITUTION = 100
_FIRST_RANDOM_PRACTITIONER = 1000
_FIRST_PRINCIPAL = 950_000
MAX_PRACTITIONERS = _FIRST_PRINCIPAL - _FIRST_RANDOM_PRACTITIONER
# The termination threshold of every policy in loader/policies (points a year).
_LEDGER_POINTS_BELOW = 12

Row = dict[str, str]


@dataclass(frozen=True)
class SampleData:
    """Rows of the two files, as column name -> text (empty = absent)."""

    registry: list[Row]
    status: list[Row]
    ledger: list[Row]


@dataclass(frozen=True)
class SampleFiles:
    """Where ``write_sample`` wrote, and how many records."""

    registry: Path
    status: Path
    registry_records: int
    status_records: int
    ledger: Path
    ledger_records: int


def generate_sample(
    practitioners: int = DEFAULT_PRACTITIONERS,
    seed: int = DEFAULT_SEED,
    today: dt.date | None = None,
) -> SampleData:
    """The sample's rows: the FIXED ones first, then ``practitioners`` random staff.

    Pharmacy principals come on top of ``practitioners``.
    """
    if not 0 <= practitioners <= MAX_PRACTITIONERS:
        raise ValueError(f"practitioners must be in 0..{MAX_PRACTITIONERS}")
    today = today or today_cst()
    rng = random.Random(seed)
    registry, status = _fixed_rows(today)
    ledger = _fixed_ledger(today, registry)
    hospitals, pharmacies = _institutions()
    for n, pharmacy in enumerate(pharmacies):
        _principal(rng, today, pharmacy, n, registry, status)
    for n in range(practitioners):
        _staff(rng, today, n, hospitals, pharmacies, registry, status, ledger)
    return SampleData(registry=registry, status=status, ledger=ledger)


def practitioner_count(text: str) -> int:
    """``--practitioners``: a count the sample can make (argparse ``type``;
    out of range is a usage error, exit 2, not a traceback)."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= count <= MAX_PRACTITIONERS:
        raise argparse.ArgumentTypeError(
            f"{count} is out of range: the sample makes 0..{MAX_PRACTITIONERS} staff "
            "(their codes must stay below the pharmacy principals')"
        )
    return count


def write_sample(
    out_dir: Path | str,
    practitioners: int = DEFAULT_PRACTITIONERS,
    seed: int = DEFAULT_SEED,
    file_format: FileFormat = "csv",
    today: dt.date | None = None,
) -> SampleFiles:
    """Write ``registry.<fmt>``, ``status.<fmt>`` and ``ledger.<fmt>`` (the scoring
    ledger, for practitioners the status feed does not name) into ``out_dir``."""
    data = generate_sample(practitioners, seed, today)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    registry = out / f"registry.{file_format}"
    status = out / f"status.{file_format}"
    _write(registry, REGISTRY_COLUMNS, data.registry, file_format)
    _write(status, STATUS_COLUMNS, data.status, file_format)
    ledger = out / f"ledger.{file_format}"
    _write(ledger, LEDGER_COLUMNS, data.ledger, file_format)
    # The fixed codes, for whoever demonstrates or tests the data set without
    # importing the loader (the gateway's embedded default and its demo).
    fixture = {k: v for k, v in dataclasses.asdict(FIXED).items() if isinstance(v, str)}
    (out / FIXTURE_FILE).write_bytes(orjson.dumps(fixture, option=orjson.OPT_INDENT_2))
    return SampleFiles(
        registry, status, len(data.registry), len(data.status), ledger, len(data.ledger)
    )


def _write(path: Path, columns: Sequence[str], rows: list[Row], file_format: FileFormat) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        if file_format == "csv":
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(columns)
            writer.writerows([row.get(name, "") for name in columns] for row in rows)
        else:
            for row in rows:
                # Absent optional values are left out, as a JSON producer would.
                record = {name: row[name] for name in columns if row.get(name)}
                out.write(orjson.dumps(record).decode())
                out.write("\n")


def _iso(date: dt.date) -> str:
    return date.isoformat()


def _registration(
    code: str, institution: str, role: str, start: dt.date, end: dt.date | None
) -> Row:
    return {
        "practitioner_code": code,
        "institution_code": institution,
        "role": role,
        "registered_on": _iso(start),
        "deregistered_on": _iso(end) if end else "",
    }


def _status(code: str, status: str, start: dt.date, until: dt.date | None, reference: str) -> Row:
    return {
        "practitioner_code": code,
        "status": status,
        "effective_from": _iso(start),
        "effective_until": _iso(until) if until else "",
        "reference": reference,
    }


def _fixed_rows(today: dt.date) -> tuple[list[Row], list[Row]]:
    f = FIXED

    def day(offset: int) -> dt.date:
        return today + dt.timedelta(days=offset)

    since = dt.date(2015, 3, 1)
    registry = [
        _registration(f.active_doctor, f.hospital, "doctor", since, None),
        _registration(f.warned_doctor, f.hospital, "doctor", since, None),
        _registration(f.suspended_doctor, f.hospital, "doctor", dt.date(2012, 9, 1), None),
        _registration(f.suspended_doctor, f.second_hospital, "doctor", dt.date(2019, 5, 6), None),
        _registration(f.terminated_doctor, f.hospital, "doctor", since, None),
        _registration(
            f.deregistered_doctor,
            f.hospital,
            "doctor",
            dt.date(2010, 1, 4),
            day(f.deregistered_offset),
        ),
        _registration(f.formerly_suspended_nurse, f.hospital, "nurse", since, None),
        _registration(f.future_suspended_doctor, f.hospital, "doctor", since, None),
        _registration(f.second_hospital_doctor, f.second_hospital, "doctor", since, None),
        _registration(f.technician, f.hospital, "technician", since, None),
        _registration(f.active_principal, f.pharmacy, "principal", since, None),
        _registration(
            f.suspended_principal, f.pharmacy_with_suspended_principal, "principal", since, None
        ),
        _registration(f.pharmacist, f.pharmacy, "pharmacist", since, None),
    ]
    year_start = dt.date(today.year, 1, 1)
    status = [
        _status(f.warned_doctor, "WARNED", year_start, dt.date(today.year, 12, 31), "FIX-W-1"),
        _status(
            f.suspended_doctor,
            "SUSPENDED",
            day(f.suspended_from_offset),
            day(f.suspended_until_offset),
            "FIX-S-1",
        ),
        _status(f.terminated_doctor, "TERMINATED", day(f.terminated_from_offset), None, "FIX-T-1"),
        _status(
            f.formerly_suspended_nurse,
            "SUSPENDED",
            day(f.past_suspension_offsets[0]),
            day(f.past_suspension_offsets[1]),
            "FIX-S-2",
        ),
        _status(
            f.future_suspended_doctor,
            "SUSPENDED",
            day(f.future_suspension_offsets[0]),
            day(f.future_suspension_offsets[1]),
            "FIX-S-3",
        ),
        _status(
            f.suspended_principal,
            "SUSPENDED",
            day(f.principal_suspension_offsets[0]),
            day(f.principal_suspension_offsets[1]),
            "FIX-S-4",
        ),
    ]
    return registry, status


def _event(
    event_id: str,
    code: str,
    institution: str,
    kind: str,
    on: dt.date,
    points: int | None = None,
    months: int | None = None,
    reference: str = "",
) -> Row:
    return {
        "event_id": event_id,
        "practitioner_code": code,
        "institution_code": institution,
        "kind": kind,
        "points": "" if points is None else str(points),
        "effective_on": _iso(on),
        "suspension_months": "" if months is None else str(months),
        "reference": reference,
    }


def _this_year(today: dt.date, offset: int) -> dt.date:
    """``today + offset`` days, kept inside this calendar year (points reset on 1 January)."""
    return max(dt.date(today.year, 1, 1), today + dt.timedelta(days=offset))


def _fixed_ledger(today: dt.date, registry: list[Row]) -> list[Row]:
    f = FIXED
    since = dt.date(2015, 3, 1)
    for code in (f.points_warned_doctor, f.points_suspended_doctor, f.points_revoked_doctor):
        registry.append(_registration(code, f.hospital, "doctor", since, None))
    h = f.hospital
    return [
        _event("FIX-E-1", f.points_warned_doctor, h, "SCORE", _this_year(today, -60), 3),
        _event("FIX-E-2", f.points_warned_doctor, h, "SCORE", _this_year(today, -30), 4),
        _event("FIX-E-3", f.points_suspended_doctor, h, "SCORE", _this_year(today, -50), 6),
        _event("FIX-E-4", f.points_suspended_doctor, h, "SCORE", _this_year(today, -20), 4, 3),
        _event("FIX-E-5", f.points_revoked_doctor, h, "SCORE", _this_year(today, -40), 9, 2),
        _event(
            "FIX-E-6", f.points_revoked_doctor, h, "REVOKE", _this_year(today, 0), None, None,
            "FIX-E-5",
        ),
    ]  # fmt: skip


def _institutions() -> tuple[list[str], list[str]]:
    hospitals = [FIXED.hospital, FIXED.second_hospital]
    pharmacies = [FIXED.pharmacy, FIXED.pharmacy_with_suspended_principal]
    for letter, count, out in (("H", _HOSPITALS, hospitals), ("P", _PHARMACIES, pharmacies)):
        for n in range(count - len(out)):
            district = _DISTRICTS[n % len(_DISTRICTS)]
            out.append(f"{letter}{district}{_FIRST_RANDOM_INSTITUTION + n:05d}")
    return hospitals, pharmacies


def _code(letters: str, number: int) -> str:
    district = _DISTRICTS[number % len(_DISTRICTS)]
    return f"{letters}{district}{number:06d}"


def _past_day(rng: random.Random, today: dt.date, lo: int, hi: int) -> dt.date:
    """A day between ``hi`` and ``lo`` days before today."""
    return today - dt.timedelta(days=rng.randint(lo, hi))


def _references(kind: str, n: int) -> Iterator[str]:
    for k in range(1, 10):
        yield f"{kind}-{n:06d}-{k}"


def _principal(
    rng: random.Random,
    today: dt.date,
    pharmacy: str,
    n: int,
    registry: list[Row],
    status: list[Row],
) -> None:
    if pharmacy in (FIXED.pharmacy, FIXED.pharmacy_with_suspended_principal):
        return  # the fixed rows have their principals
    code = _code("HY", _FIRST_PRINCIPAL + n)
    registry.append(
        _registration(code, pharmacy, "principal", _past_day(rng, today, 400, 4000), None)
    )
    if n % 10 == 3:
        start = _past_day(rng, today, 5, 60)
        until = start + dt.timedelta(days=rng.randint(70, 180))
        status.append(_status(code, "SUSPENDED", start, until, f"PRN-{n:04d}"))


def _staff(
    rng: random.Random,
    today: dt.date,
    n: int,
    hospitals: list[str],
    pharmacies: list[str],
    registry: list[Row],
    status: list[Row],
    ledger: list[Row],
) -> None:
    letters, role, _ = rng.choices(
        (*_STAFF_KINDS, _PHARMACY_STAFF), weights=[k[2] for k in (*_STAFF_KINDS, _PHARMACY_STAFF)]
    )[0]
    code = _code(letters, _FIRST_RANDOM_PRACTITIONER + n)
    places = pharmacies if letters == "HY" else hospitals
    first_day = _past_day(rng, today, 400, 5500)
    deregistered = rng.random() < 0.03
    count = rng.choice((1, 1, 1, 2, 2, 3))
    sites = rng.sample(places, count)
    if rng.random() < 0.5 or count == 1:
        # Concurrent registrations (多点执业), all from around the same time.
        for site in sites:
            start = first_day + dt.timedelta(days=rng.randint(0, 200))
            end = _past_day(rng, today, 1, 300) if deregistered else None
            if end is not None and end <= start:
                end = start + dt.timedelta(days=1)
            registry.append(_registration(code, site, role, start, end))
    else:
        # Moved from one institution to the next; the last one is current.
        start = first_day
        for k, site in enumerate(sites):
            last = k == len(sites) - 1
            span = (today - start).days
            end = start + dt.timedelta(days=max(1, span // 2)) if not last else None
            if last and deregistered:  # left the last one too, some day before today
                end = start + dt.timedelta(days=rng.randint(1, max(1, span - 1)))
            registry.append(_registration(code, site, role, start, end))
            if end is None:
                break
            start = end
    _staff_status(rng, today, code, n, status, ledger, sites[0])


def _staff_status(
    rng: random.Random,
    today: dt.date,
    code: str,
    n: int,
    status: list[Row],
    ledger: list[Row],
    institution: str,
) -> None:
    refs = _references("AUTH", n)
    roll = rng.random()
    if roll < 0.05:
        start = max(dt.date(today.year, 1, 1), _past_day(rng, today, 0, 200))
        status.append(_status(code, "WARNED", start, dt.date(start.year, 12, 31), next(refs)))
    elif roll < 0.07:  # a past suspension
        start = _past_day(rng, today, 200, 900)
        until = start + dt.timedelta(days=rng.randint(30, 180))
        status.append(_status(code, "SUSPENDED", start, until, next(refs)))
    elif roll < 0.09:  # a suspension covering today
        start = _past_day(rng, today, 1, 60)
        until = today + dt.timedelta(days=rng.randint(1, 150))
        status.append(_status(code, "SUSPENDED", start, until, next(refs)))
    elif roll < 0.10:  # a suspension starting in the future
        start = today + dt.timedelta(days=rng.randint(1, 30))
        until = start + dt.timedelta(days=rng.randint(30, 180))
        status.append(_status(code, "SUSPENDED", start, until, next(refs)))
    elif roll < 0.11:  # a suspension lifted early (修复), then ACTIVE
        start = _past_day(rng, today, 60, 120)
        until = start + dt.timedelta(days=180)
        lifted = start + dt.timedelta(days=rng.randint(10, 50))
        status.append(_status(code, "SUSPENDED", start, until, next(refs)))
        status.append(_status(code, "ACTIVE", lifted, None, next(refs)))
    elif roll < 0.125:  # terminated
        status.append(_status(code, "TERMINATED", _past_day(rng, today, 1, 700), None, next(refs)))
    elif roll < 0.13:  # terminated, then reinstated
        start = _past_day(rng, today, 400, 1500)
        status.append(_status(code, "TERMINATED", start, None, next(refs)))
        reinstated = start + dt.timedelta(days=rng.randint(365, 390))
        status.append(_status(code, "ACTIVE", reinstated, None, next(refs)))
    elif roll < 0.16:  # no status record: scored through the ledger instead
        total = 0
        for k in range(rng.randint(1, 3)):
            on = _this_year(today, -rng.randint(0, 300))
            points = rng.choice((1, 2, 3, 3, 4, 6))
            months = rng.randint(1, 6)
            # Never 12 points in a year (TERMINATED, with a re-registration
            # bar that the moves drawn above may break: the loader refuses
            # such a file; seed 1 first did at 526,004 staff, seeds 2 and 3
            # near 100,000). Drawn as before, so other rows do not change.
            points = min(points, _LEDGER_POINTS_BELOW - 1 - total)
            if points <= 0:
                continue
            total += points
            ledger.append(
                _event(
                    f"EV-{n:06d}-{k}",
                    code,
                    institution,
                    "SCORE",
                    on,
                    points,
                    months,
                    f"CASE-{n:06d}",
                )
            )
