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
    """The agent's own zone, for showing times (`status`). Schedules are judged in the
    zone systemd uses, found by exporter.schedule_zone.

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


# A horizon that never comes: "this answer stands for every later time".
FOREVER_US = 2**63


def occurrences(specs: list[str], after_us: int, until_us: int, zone,
                limit: int = MAX_OCCURRENCES) -> list[int]:
    """Elapse times of the OnCalendar `specs` in (after_us, until_us], oldest first,
    at most `limit` of them (see occurrences_steady)."""
    return occurrences_steady(specs, after_us, until_us, zone, limit)[0]


def occurrences_steady(specs: list[str], after_us: int, until_us: int, zone,
                       limit: int = MAX_OCCURRENCES) -> tuple[list[int], int]:
    """(occurrences(...), the first time before which asking with a later `until_us`
    gives the same list: the first elapse past `until_us`).

    Memoized: the agent asks this for every timer on every sample, with the same
    `after_us` (the last run) and a later `until_us` (now). The iteration from one start
    always yields the same elapses, so the answer stands until the first elapse past
    the `until_us` it was computed for (or forever once `limit` is reached or the
    schedule has no more)."""
    found = []
    if not specs:
        return found, FOREVER_US
    if until_us <= after_us:
        return found, after_us + 1
    key = (tuple(specs), after_us, zone, limit)
    hit = _OCCURRENCES.get(key)
    if hit is not None:
        until0, found0, beyond = hit
        if until0 <= until_us and (beyond is None or until_us < beyond):
            return list(found0), FOREVER_US if beyond is None else beyond
    beyond = None
    for usec in _iterate(specs, after_us, zone):
        if len(found) == limit:
            break
        if usec > until_us:
            beyond = usec
            break
        found.append(usec)
    _remember(_OCCURRENCES, key, (until_us, tuple(found), beyond))
    # None: the limit is reached or the schedule has no more; either way it stands.
    return found, FOREVER_US if beyond is None else beyond


def next_after(specs: list[str], after_us: int, zone) -> int:
    """The first elapse after `after_us`; 0 when the schedule has none left."""
    return next(_iterate(specs, after_us, zone), 0) if specs else 0


def latest_until(specs: list[str], until_us: int, zone) -> int:
    """The last elapse at or before `until_us`; 0 when there is none (see latest_steady)."""
    return latest_steady(specs, until_us, zone)[0]


def latest_steady(specs: list[str], until_us: int, zone) -> tuple[int, int]:
    """(latest_until(...), the first time before which a later `until_us` is vouched to
    give the same elapse: the next elapse, or sooner where a window might start inside a
    repeated hour; `until_us` itself when nothing is vouched for).

    oncalendar only iterates forwards, so look back over growing windows (an hour, a
    day, a month, a year, then the schedule's whole past) until one holds an elapse.

    Around a DST fall-back, which elapses there are depends on where systemd starts
    looking: from inside the repeated hour's second pass it finds elapses there, from
    before it it skips them (a `02:30` timer fires at 02:30 CEST, not again at 02:30
    CET). A timer that has been running came from before, so no window starts inside a
    second pass.

    Memoized (asked for every timer on every sample): the answer for `until_us` stands
    for any later time before the next elapse, as long as no window the search looks
    at starts inside a repeated (fall-back) hour, the only place where iterating from
    another start gives other elapses. Otherwise it is computed afresh.
    """
    key = (tuple(specs), zone)
    hit = _LATEST.get(key)
    if hit is not None:
        until0, last0, next0, zones, clear_until = hit
        if until0 <= until_us and (next0 is None or until_us < next0) and (
                until_us < clear_until or _windows_clear(until_us, last0, zones)):
            return last0, min(FOREVER_US if next0 is None else next0, clear_until)
    for window_s in _windows(until_us):
        after = max(until_us - window_s * 1_000_000, 0)
        last, following = 0, None
        for usec in _iterate(specs, after, zone, first_pass=True):
            if usec > until_us:
                following = usec
                break
            last = usec
        if last or after == 0:
            zones = _zones_of(specs, zone)
            if _windows_clear(until_us, last, zones):
                clear_until = _clear_until(until_us, last, following, zones)
                _remember(_LATEST, key, (until_us, last, following, zones, clear_until))
                return last, min(FOREVER_US if following is None else following, clear_until)
            return last, until_us
    return 0, until_us


def _windows(until_us: int) -> tuple[int, ...]:
    return (3600, 86400, 32 * 86400, 367 * 86400, until_us // 1_000_000)


def _zones_of(specs: list[str], zone) -> tuple:
    """The zones the specs are evaluated in (their own, or `zone`) that may have folds."""
    zones = {zone}
    for spec in specs:
        words = _normalise(spec)[0].split()
        if len(words) > 1:
            zones.add(parse_tz(words[-1]) or zone)
    return tuple(z for z in zones if not isinstance(z, timezone))


def _in_fold(usec: int, zones: tuple) -> bool:
    """The instant, or the second before it, is in a repeated (fall-back) hour of a zone."""
    for start in (usec, usec - 1_000_000):
        moment = to_datetime(max(start, 0), timezone.utc)
        for zone in zones:
            local = moment.astimezone(zone).replace(tzinfo=None)
            if (local.replace(tzinfo=zone, fold=0).utcoffset()
                    != local.replace(tzinfo=zone, fold=1).utcoffset()):
                return True
    return False


def _windows_clear(until_us: int, last: int, zones: tuple) -> bool:
    """No window latest_until(until_us) looks at before it reaches `last` starts in a
    repeated hour (nor a second before one: fractional-second specs start earlier)."""
    if not zones:
        return True
    for window_s in _windows(until_us):
        after = max(until_us - window_s * 1_000_000, 0)
        if _in_fold(after, zones):
            return False
        if after < last or after == 0:
            return True
    return True


DAY_US = 86400 * 1_000_000


def _clear_until(until_us: int, last: int, following: int | None, zones: tuple) -> int:
    """Until when (before `following`) every window start stays clear of folds, so a
    cached answer needs no check: the starts of the windows sweep [until_us - w,
    following - w); each sweep is sampled every hour (no zone changes its offset twice
    within an hour). Spans over 40 days are not vouched for (0: check each time)."""
    if not zones:
        return 2**63
    if following is None or following - until_us > 40 * DAY_US:
        return 0
    for window_s in _windows(following):
        window_us = window_s * 1_000_000
        start, end = max(until_us - window_us, 0), max(following - window_us, 0)
        offsets = set()
        for probe in range(start, end + 3600 * 1_000_000, 3600 * 1_000_000):
            moment = to_datetime(min(probe, end), timezone.utc)
            offsets.update(moment.astimezone(z).utcoffset() for z in zones)
            if len(offsets) > len(zones) or _in_fold(min(probe, end), zones):
                return 0
        # Every start swept is before `end`: at or before `last`, the window holds it
        # and no larger one is looked at.
        if end <= last or end == 0:
            break
    return following


_OCCURRENCES: dict = {}
_LATEST: dict = {}
_CACHE_ENTRIES = 8192


def _remember(cache: dict, key, value) -> None:
    if len(cache) >= _CACHE_ENTRIES:
        cache.clear()
    cache[key] = value
