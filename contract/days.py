"""Calendar days as small integers.

Dates are stored as days since 1970-01-01 in a ``uint16`` (the index keeps
two per registration, so the width matters at 15 million practitioners).
That covers 1970-01-01 .. 2149-06-05; ``DAY_NONE`` (65535) marks an open end.
The wire carries dates as int32 ``YYYYMMDD``; files carry ``YYYY-MM-DD``.
All dates are China Standard Time (UTC+8).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import numpy.typing as npt

EPOCH = dt.date(1970, 1, 1)
DAY_NONE = 0xFFFF
MAX_DAY = DAY_NONE - 1
MIN_DATE = EPOCH
MAX_DATE = EPOCH + dt.timedelta(days=MAX_DAY)
CST = dt.timezone(dt.timedelta(hours=8), "CST")
_EPOCH_ORDINAL = EPOCH.toordinal()


class DateError(ValueError):
    """A date that is not a real calendar date, or lies outside the stored range."""


def date_to_day(date: dt.date) -> int:
    day = date.toordinal() - _EPOCH_ORDINAL
    if not 0 <= day <= MAX_DAY:
        raise DateError(f"{date.isoformat()} is outside {MIN_DATE} .. {MAX_DATE}")
    return day


def day_to_date(day: int) -> dt.date:
    return dt.date.fromordinal(_EPOCH_ORDINAL + int(day))


def yyyymmdd_to_day(value: int) -> int:
    """Day number of an int ``YYYYMMDD``; raise ``DateError`` if it is not a real date."""
    year, rest = divmod(int(value), 10000)
    month, mday = divmod(rest, 100)
    try:
        date = dt.date(year, month, mday)
    except ValueError as exc:
        raise DateError(f"{value} is not a real date YYYYMMDD") from exc
    return date_to_day(date)


def day_to_yyyymmdd(day: int) -> int:
    date = day_to_date(day)
    return date.year * 10000 + date.month * 100 + date.day


def iso_to_day(text: str) -> int:
    """Day number of ``YYYY-MM-DD``; raise ``DateError`` for anything else."""
    if len(text) != 10 or text[4] != "-" or text[7] != "-":
        raise DateError(f"{text!r} is not a date YYYY-MM-DD")
    try:
        date = dt.date.fromisoformat(text)
    except ValueError as exc:
        raise DateError(f"{text!r} is not a real date YYYY-MM-DD") from exc
    return date_to_day(date)


# --------------------------------------------------------------------------
# The same encoding vectorised, for the loader's columns of millions of dates.
# Day numbers count from 1970-01-01 like Arrow's date32 and numpy's
# datetime64[D], so a date32 column cast to int is already in day numbers.

_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def real_dates(
    year: npt.NDArray[np.int64], month: npt.NDArray[np.int64], mday: npt.NDArray[np.int64]
) -> npt.NDArray[np.bool_]:
    """Whether each (year, month, day) is a real proleptic Gregorian date, vectorised."""
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_ok = (month >= 1) & (month <= 12)
    last_day = _DAYS_IN_MONTH[np.where(month_ok, month, 0)] + (leap & (month == 2))
    real: npt.NDArray[np.bool_] = month_ok & (mday >= 1) & (mday <= last_day)
    return real


def days_from_civil(
    year: npt.NDArray[np.int64], month: npt.NDArray[np.int64], mday: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """Day numbers of real dates (see ``real_dates``), vectorised; no range check.

    Howard Hinnant's ``days_from_civil``
    (https://howardhinnant.github.io/date_algorithms.html#days_from_civil):
    the year is counted from March so that the leap day is last. Equal to
    ``date_to_day`` within ``MIN_DATE .. MAX_DATE``.
    """
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + np.where(month > 2, -3, 9)) + 2) // 5 + mday - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days: npt.NDArray[np.int64] = era * 146097 + doe - 719468
    return days


def today_cst() -> dt.date:
    return dt.datetime.now(CST).date()


def today_day() -> int:
    return date_to_day(today_cst())


def year_of_day(day: int) -> int:
    return day_to_date(day).year


# --------------------------------------------------------------------------
# Calendar arithmetic on day numbers (the points engine's sanctions, SPEC §7).
# Plain ints, not checked against MAX_DAY: a re-registration bar may end past
# it, and a Python date still names such a day.


def day_to_iso(day: int) -> str:
    """``YYYY-MM-DD`` of a day number (also past ``MAX_DAY``)."""
    return day_to_date(day).isoformat()


def _day_of(date: dt.date) -> int:
    # date_to_day without its range check: sanction ends may pass MAX_DAY.
    return date.toordinal() - _EPOCH_ORDINAL


def add_months(day: int, months: int) -> int:
    """The day ``months`` calendar months after ``day``, clamped to the month's
    end: 2023-01-31 + 1 month = 2023-02-28."""
    date = day_to_date(day)
    y, m = divmod(date.month - 1 + months, 12)
    year, month = date.year + y, m + 1
    next_first = dt.date(year + (month == 12), month % 12 + 1, 1)
    last_mday = (next_first - dt.timedelta(days=1)).day
    return _day_of(dt.date(year, month, min(date.day, last_mday)))


def add_years(day: int, years: int) -> int:
    """The same date ``years`` later; 29 February becomes 28 February."""
    date = day_to_date(day)
    try:
        return _day_of(date.replace(year=date.year + years))
    except ValueError:
        return _day_of(date.replace(year=date.year + years, day=28))


def suspension_until(day: int, months: int) -> int:
    """Last day of a suspension of ``months`` months from ``day`` (SPEC §7:
    from 31 January, 1 month covers 31 Jan .. 27 Feb; payable on 28 Feb)."""
    return add_months(day, months) - 1


def add_months_array(
    days: npt.NDArray[np.int64], months: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """``add_months`` vectorised (numpy calendar months, same clamping)."""
    d64 = days.astype("datetime64[D]")
    month = d64.astype("datetime64[M]")
    day_of_month = (d64 - month.astype("datetime64[D]")).astype(np.int64)  # 0-based
    target = month + months.astype("timedelta64[M]")
    first = target.astype("datetime64[D]")
    length = ((target + np.timedelta64(1, "M")).astype("datetime64[D]") - first).astype(np.int64)
    result: npt.NDArray[np.int64] = (first + np.minimum(day_of_month, length - 1)).astype(np.int64)
    return result


def years_of_days(days: npt.NDArray[np.integer]) -> npt.NDArray[np.int64]:
    """``year_of_day`` vectorised: the calendar year of each day number."""
    years: npt.NDArray[np.int64] = (
        days.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970
    )
    return years


def jan1_days(years: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Day number of 1 January of each year, vectorised."""
    days: npt.NDArray[np.int64] = (
        (years - 1970).astype("datetime64[Y]").astype("datetime64[D]").astype(np.int64)
    )
    return days


# 1 January of the years 1970..2151, index = year - 1970: every day number
# (up to 2149-06-05) and the New Year after it. A table: the replay asks often.
_JAN1_DAYS: list[int] = [_day_of(dt.date(y, 1, 1)) for y in range(1970, 2152)]


def jan1_day(year: int) -> int:
    """Day number of 1 January of ``year`` (1970..2151)."""
    return _JAN1_DAYS[year - 1970]
