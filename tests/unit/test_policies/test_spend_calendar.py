"""The ledger's UTC calendar (day and month labels, time to their ends), computed once a day."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from policies import spend


def _calendar_reference(now: float) -> tuple[str, str, float, float]:
    """Day and month labels and seconds to their ends, straight from ``datetime``."""
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    tomorrow = dt.datetime.combine(moment.date() + dt.timedelta(days=1), dt.time(), dt.UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    next_month = dt.datetime(year, month, 1, tzinfo=dt.UTC)
    return (moment.strftime("%Y-%m-%d"), moment.strftime("%Y-%m"),
            tomorrow.timestamp() - now, next_month.timestamp() - now)


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=0, max_value=4e9, allow_nan=False)
       | st.integers(0, 46_000).map(lambda day: day * 86_400.0))
def test_calendar_matches_datetime_and_a_day_is_computed_once(now: float) -> None:
    got = (spend.day_label(now), spend.month_label(now), *spend.resets_in(now))
    assert got == _calendar_reference(now)
    before = spend._day.cache_info().hits
    spend.day_label(now), spend.resets_in(now)
    assert spend._day.cache_info().hits == before + 2  # the same day: nothing recomputed
