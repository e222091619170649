"""Calendar days as small integers.

Dates are stored as days since 1970-01-01 in a ``uint16`` (the index keeps
two per registration, so the width matters at 15 million practitioners).
That covers 1970-01-01 .. 2149-06-05; ``DAY_NONE`` (65535) marks an open end.
The wire carries dates as int32 ``YYYYMMDD``; files carry ``YYYY-MM-DD``.
All dates are China Standard Time (UTC+8).
"""

from __future__ import annotations

import datetime as dt

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


def today_cst() -> dt.date:
    return dt.datetime.now(CST).date()


def today_day() -> int:
    return date_to_day(today_cst())


def year_of_day(day: int) -> int:
    return day_to_date(day).year
