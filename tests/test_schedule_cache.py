"""exporter.schedule memoizes latest_until() and occurrences() (the agent asks them for
every timer on every sample). A memoized answer must equal a fresh computation at every
moment, DST fall-back and spring-forward included (issue 9)."""

from bisect import bisect_left
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from exporter import schedule
from exporter.schedule import latest_until, occurrences, to_usec

SPECS = [
    ["*-*-* 02:30:00"],                      # inside Europe/Berlin's repeated hour
    ["*-*-* 02:00/20:00"],
    ["hourly"],
    ["*:0/7"],
    ["Mon *-*-* 03:00:00", "*-*-01 00:00:00"],
    ["*-*-* 02:30:00 UTC"],                  # a spec with its own zone
    ["*-*-* 01:15:30.5"],                    # fractional seconds
    ["2026-10-25 02:30:00"],                 # a single elapse: none after it
]
ZONES = [ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York"), timezone.utc,
         ZoneInfo("Australia/Lord_Howe")]  # a 30-minute DST shift
STEP_US = 11 * 60 * 1_000_000 + 13_000_000  # 11 min 13 s: lands on every kind of moment


def fresh(function, *args):
    saved = [(cache, dict(cache)) for cache in (schedule._LATEST, schedule._OCCURRENCES)]
    for cache, _ in saved:
        cache.clear()
    try:
        return function(*args)
    finally:
        for cache, entries in saved:
            cache.clear()
            cache.update(entries)


def sweep(start: datetime, hours: int):
    begin = to_usec(start)
    return range(begin, begin + hours * 3600 * 1_000_000, STEP_US)


@pytest.mark.parametrize("zone", ZONES, ids=str)
@pytest.mark.parametrize("start", [datetime(2026, 10, 24, 12, tzinfo=timezone.utc),  # EU fall-back
                                   datetime(2026, 3, 28, 12, tzinfo=timezone.utc),   # EU spring
                                   datetime(2026, 4, 4, 6, tzinfo=timezone.utc)],    # Lord Howe fall-back
                         ids=["autumn", "spring", "lord-howe"])
def test_memoized_answers_equal_fresh_ones_across_dst(zone, start):
    schedule._LATEST.clear()
    schedule._OCCURRENCES.clear()
    hits = 0
    for specs in SPECS:
        base = to_usec(start) - 5 * 3600 * 1_000_000  # "the last run", fixed
        for until in sweep(start, 40):
            before = len(schedule._LATEST)
            got = latest_until(specs, until, zone)
            hits += len(schedule._LATEST) == before
            assert got == fresh(latest_until, specs, until, zone), (specs, until, str(zone))
            assert occurrences(specs, base, until, zone) == fresh(
                occurrences, specs, base, until, zone), (specs, until, str(zone))
    assert hits > 0  # the memo was used, not only filled


def test_limit_and_a_clock_going_back():
    schedule._OCCURRENCES.clear()
    zone, specs = timezone.utc, ["*:*:0/5"]
    base = to_usec(datetime(2026, 1, 1, tzinfo=timezone.utc))
    late = base + 3600 * 1_000_000
    assert len(occurrences(specs, base, late, zone, limit=100)) == 100
    assert len(occurrences(specs, base, late + 10**9, zone, limit=100)) == 100
    earlier = occurrences(specs, base, base + 12_000_000, zone, limit=100)  # clock went back
    assert earlier == [base + 5_000_000, base + 10_000_000]


@pytest.mark.parametrize("zone", ZONES, ids=str)
@pytest.mark.parametrize("start", [datetime(2026, 10, 24, 12, tzinfo=timezone.utc),
                                   datetime(2026, 3, 28, 12, tzinfo=timezone.utc),
                                   datetime(2026, 4, 4, 6, tzinfo=timezone.utc)],
                         ids=["autumn", "spring", "lord-howe"])
def test_an_answer_stands_until_its_horizon(zone, start):
    """latest_steady / occurrences_steady vouch for their answer until a horizon: every
    later moment before it gets the same answer worked out afresh, DST included (what
    lets the collector reuse a timer's point, exporter.timer_health.Health.steady_until_us)."""
    schedule._LATEST.clear()
    schedule._OCCURRENCES.clear()
    vouched = 0
    for specs in SPECS:
        base = to_usec(start) - 5 * 3600 * 1_000_000
        moments = list(sweep(start, 40))
        for i, until in enumerate(moments):
            last, last_until = schedule.latest_steady(specs, until, zone)
            due, due_until = schedule.occurrences_steady(specs, base, until, zone)
            # The next moment, and the last one before each horizon (the telling one).
            laters = {moments[j] for j in (i + 1, bisect_left(moments, last_until) - 1,
                                           bisect_left(moments, due_until) - 1)
                      if i < j < len(moments)}
            for later in sorted(laters):
                if later < last_until:
                    vouched += 1
                    assert fresh(latest_until, specs, later, zone) == last, (specs, until, later)
                if later < due_until:
                    assert fresh(occurrences, specs, base, later, zone) == due, (specs, until, later)
    assert vouched > 0
