from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract import days


@given(st.dates(min_value=days.MIN_DATE, max_value=days.MAX_DATE))
def test_round_trips(date: dt.date) -> None:
    day = days.date_to_day(date)
    assert 0 <= day <= days.MAX_DAY < days.DAY_NONE
    assert days.day_to_date(day) == date
    yyyymmdd = date.year * 10000 + date.month * 100 + date.day
    assert days.yyyymmdd_to_day(yyyymmdd) == day
    assert days.day_to_yyyymmdd(day) == yyyymmdd
    assert days.iso_to_day(date.isoformat()) == day


@pytest.mark.parametrize("value", [20251399, 20250230, 20250000, 0, -1, 99999999, 19691231])
def test_unreal_or_out_of_range_yyyymmdd_is_refused(value: int) -> None:
    with pytest.raises(days.DateError):
        days.yyyymmdd_to_day(value)


@pytest.mark.parametrize("text", ["2025-02-30", "2025-2-3", "20250203", "2025/02/03", "", "x" * 10])
def test_bad_iso_dates_are_refused(text: str) -> None:
    with pytest.raises(days.DateError):
        days.iso_to_day(text)


def test_today_is_china_standard_time() -> None:
    now_cst = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date()
    assert days.today_cst() in (now_cst, now_cst - dt.timedelta(days=1))
