"""When a timer was due: OnCalendar occurrences, evaluated with the `oncalendar` package
(BSD, by the healthchecks.io author), checked against systemd's own evaluator
(`systemd-analyze calendar`) in tests/test_schedule_systemd.py.

All times in and out are integer microseconds since the epoch (systemd's unit). The
conversion to datetime is pure arithmetic on an aware UTC epoch, never
`datetime.fromtimestamp`, which overflows past 2038 where time_t is 32 bits (armhf).
"""

import heapq
import os
import re
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from oncalendar import OnCalendar, OnCalendarError, parse_tz

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


_FRACTION = re.compile(r"(\d+)(?:\.(\d{1,6}))?")


def _normalise(spec: str) -> tuple[str, int]:
    """(spec oncalendar can read, microseconds to add to each of its elapses).

    Works around what oncalendar 1.1 rejects but systemd accepts (checked against
    `systemd-analyze calendar` in tests/test_schedule_systemd.py):
    - `@EPOCH`: systemd reads it as that instant, normalised as `YYYY-MM-DD HH:MM:SS UTC`.
    - a ` utc` suffix in any case: systemd matches the UTC suffix case-insensitively.
    - fractional seconds (systemd keeps them to the microsecond, normalised form
      `*:*:00.500000`) when every second value carries the same fraction and every
      repeat is whole: the same schedule on whole seconds, shifted by that fraction.
      Mixed fractions or fractional repeats (`01.250000/0.500000`) stay unsupported.
    """
    spec = spec.strip()
    if spec.startswith("@") and spec[1:].isdigit():
        moment = EPOCH + timedelta(seconds=int(spec[1:]))
        return moment.strftime("%Y-%m-%d %H:%M:%S UTC"), 0
    if spec[-4:].upper() == " UTC":
        spec = spec[:-4] + " UTC"
    if "." not in spec:
        return spec, 0
    words = spec.split()
    clock = next((i for i, word in enumerate(words) if ":" in word), None)
    fields = words[clock].split(":") if clock is not None else []
    if len(fields) != 3:
        return spec, 0
    fractions, terms = set(), []
    for term in fields[2].split(","):
        values, _, repeat = term.partition("/")
        whole = []
        for value in values.split(".."):
            match = _FRACTION.fullmatch(value)
            if not match:
                return spec, 0
            whole.append(match[1])
            fractions.add(int((match[2] or "").ljust(6, "0")))
        if repeat:
            match = _FRACTION.fullmatch(repeat)
            if not match or int(match[2] or 0):
                return spec, 0
            whole[-1] += "/" + match[1]
        terms.append("..".join(whole))
    if len(fractions) != 1:
        return spec, 0
    words[clock] = ":".join(fields[:2] + [",".join(terms)])
    return " ".join(words), fractions.pop()


def _elapses(spec: str, after_us: int, zone, first_pass: bool = False):
    """One spec's elapses after `after_us`, as integer microseconds, increasing.

    `first_pass`: if `after_us` falls in the second pass of a repeated (fall-back) hour,
    start from the same wall time in the first pass instead, an hour or so earlier.
    """
    text, shift = _normalise(spec)
    words = text.split()
    try:
        spec_zone = (parse_tz(words[-1]) if len(words) > 1 else None) or zone
        start = after_us - shift
        if first_pass:
            start = min(start, to_usec(to_datetime(start, spec_zone).replace(fold=0)))
        moments = OnCalendar(text, to_datetime(start, zone))
    except OnCalendarError as err:
        raise ScheduleError(f"cannot evaluate {spec!r}: {err}") from err
    return _after(moments, start, spec_zone, shift)


def _after(moments, start: int, spec_zone, shift: int):
    for moment in moments:
        usec = to_usec(moment)
        if usec <= start:
            # oncalendar 1.1 walks wall-clock time and maps it back with fold=0, so
            # from a start inside the repeated hour of a DST fall-back (second pass,
            # e.g. 02:30 CET on 2026-10-25 in Europe/Berlin) it yields the first
            # pass's instants, an hour *before* the start. systemd carries on in the
            # second pass (its mktime() keeps the offset of the start): same wall
            # time, fold=1.
            usec = to_usec(moment.astimezone(spec_zone).replace(fold=1))
            if usec <= start:
                continue
        yield usec + shift


def _iterate(specs: list[str], after_us: int, zone, first_pass: bool = False):
    """All specs' elapses after `after_us`, merged, without duplicates."""
    last = None
    iterators = [_elapses(spec, after_us, zone, first_pass) for spec in specs]
    for usec in heapq.merge(*iterators):
        if usec != last:
            last = usec
            yield usec


def occurrences(specs: list[str], after_us: int, until_us: int, zone,
                limit: int = MAX_OCCURRENCES) -> list[int]:
    """Elapse times of the OnCalendar `specs` in (after_us, until_us], oldest first,
    at most `limit` of them."""
    found = []
    if not specs or until_us <= after_us:
        return found
    for usec in _iterate(specs, after_us, zone):
        if usec > until_us or len(found) == limit:
            break
        found.append(usec)
    return found


def next_after(specs: list[str], after_us: int, zone) -> int:
    """The first elapse after `after_us`; 0 when the schedule has none left."""
    return next(_iterate(specs, after_us, zone), 0) if specs else 0


def latest_until(specs: list[str], until_us: int, zone) -> int:
    """The last elapse at or before `until_us`; 0 when there is none.

    oncalendar only iterates forwards, so look back over growing windows (an hour, a
    day, a month, a year, then the schedule's whole past) until one holds an elapse.

    Around a DST fall-back, which elapses there are depends on where systemd starts
    looking: from inside the repeated hour's second pass it finds elapses there, from
    before it it skips them (a `02:30` timer fires at 02:30 CEST, not again at 02:30
    CET). A timer that has been running came from before, so no window starts inside a
    second pass.
    """
    for window_s in (3600, 86400, 32 * 86400, 367 * 86400, until_us // 1_000_000):
        after = max(until_us - window_s * 1_000_000, 0)
        last = 0
        for usec in _iterate(specs, after, zone, first_pass=True):
            if usec > until_us:
                break
            last = usec
        if last or after == 0:
            return last
    return 0
