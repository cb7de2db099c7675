"""When a timer was due: OnCalendar occurrences, evaluated with the `oncalendar` package
(BSD, by the healthchecks.io author), checked against systemd's own evaluator
(`systemd-analyze calendar`) in tests/test_schedule_systemd.py.

All times in and out are integer microseconds since the epoch (systemd's unit). The
conversion to datetime is pure arithmetic on an aware UTC epoch, never
`datetime.fromtimestamp`, which overflows past 2038 where time_t is 32 bits (armhf).
"""

import os
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from oncalendar import OnCalendar, OnCalendarError

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ONE_US = timedelta(microseconds=1)
# Enough for a 5-second timer over ~14 hours; past that, a count is "at least this many".
MAX_OCCURRENCES = 10_000


class ScheduleError(ValueError):
    pass


def local_zone(name: str = "") -> ZoneInfo | timezone:
    """The zone systemd evaluates OnCalendar in when a spec names none: the host's.

    `name` (config `timers.timezone`) wins; then $TZ; then the /etc/localtime symlink
    (Debian's layout) or its contents; UTC when the host has none.
    """
    for candidate in (name, os.environ.get("TZ", "").lstrip(":")):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                pass
    try:
        target = os.readlink("/etc/localtime")
        return ZoneInfo(target.split("zoneinfo/", 1)[1])
    except (OSError, IndexError, ZoneInfoNotFoundError, ValueError):
        pass
    try:
        with open("/etc/localtime", "rb") as handle:
            return ZoneInfo.from_file(handle)
    except (OSError, ValueError):
        return timezone.utc


def to_datetime(usec: int, zone) -> datetime:
    return (EPOCH + timedelta(microseconds=usec)).astimezone(zone)


def to_usec(moment: datetime) -> int:
    return (moment - EPOCH) // ONE_US


def _iterate(specs: list[str], after_us: int, zone):
    try:
        return OnCalendar("\n".join(specs), to_datetime(after_us, zone))
    except OnCalendarError as err:
        raise ScheduleError(f"cannot evaluate {'; '.join(specs)!r}: {err}") from err


def occurrences(specs: list[str], after_us: int, until_us: int, zone,
                limit: int = MAX_OCCURRENCES) -> list[int]:
    """Elapse times of the OnCalendar `specs` in (after_us, until_us], oldest first,
    at most `limit` of them."""
    found = []
    if not specs or until_us <= after_us:
        return found
    for moment in _iterate(specs, after_us, zone):
        usec = to_usec(moment)
        if usec > until_us or len(found) == limit:
            break
        found.append(usec)
    return found


def next_after(specs: list[str], after_us: int, zone) -> int:
    """The first elapse after `after_us`; 0 when the schedule has none left."""
    return next((to_usec(m) for m in _iterate(specs, after_us, zone)), 0) if specs else 0


def latest_until(specs: list[str], until_us: int, zone) -> int:
    """The last elapse at or before `until_us`; 0 when there is none.

    oncalendar only iterates forwards, so look back over growing windows (an hour, a
    day, a month, a year, then the schedule's whole past) until one holds an elapse.
    """
    for window_s in (3600, 86400, 32 * 86400, 367 * 86400, until_us // 1_000_000):
        after = max(until_us - window_s * 1_000_000, 0)
        last = 0
        for moment in _iterate(specs, after, zone):
            usec = to_usec(moment)
            if usec > until_us:
                break
            last = usec
        if last or after == 0:
            return last
    return 0
