"""Cron fields -> systemd OnCalendar= lines that elapse at exactly the same times.

Each field becomes the exact set of values it stands for, written back as `*`, a
`start/step` repetition where systemd computes it right (see `component`), `a..b`
runs or a comma list: `*/7` minutes is `00,07,14,21,28,35,42,49,56`. Nothing is
approximated.

Cron's day rule: when day-of-month and day-of-week are both restricted (neither
field starts with `*`), a day matches if *either* matches. One OnCalendar= line is an
AND of its fields, so that case becomes two lines (a timer elapses at the union of its
lines). When either field starts with `*`, cron ANDs them, like systemd.

The times are local wall-clock times, as cron's; `zone` (from cronie's CRON_TZ) adds
a time zone to every line.
"""

from __future__ import annotations

from .parse import Field, Schedule

SYSTEMD_DAYS = {1: "Mon", 2: "Tue", 3: "Wed", 4: "Thu", 5: "Fri", 6: "Sat", 0: "Sun"}
DAY_ORDER = [1, 2, 3, 4, 5, 6, 0]  # systemd's week runs Monday..Sunday
MONTH_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}


class NeverRuns(ValueError):
    pass


def component(values: frozenset[int], low: int, high: int, repeat: bool = True) -> str:
    """One OnCalendar component for exactly `values`.

    `start/step` only for a whole residue class of a step that divides the range
    (`*/15` minutes -> `00/15`, `1-23/2` hours -> `01/2`): systemd 252 computes other
    repetitions wrongly after a rollover (`*:00/7` elapses at 23:56 and then 00:07,
    never at 00:00), so those, and every day-of-month step, are written as lists."""
    vals = sorted(values)
    if vals == list(range(low, high + 1)):
        return "*"
    size = high - low + 1
    if repeat and len(vals) >= 3:
        step = vals[1] - vals[0]
        if size % step == 0 and vals == list(range(vals[0], high + 1, step)) and vals[0] < low + step:
            return f"{vals[0]:02d}/{step}"
    return ",".join(_runs(vals, lambda v: f"{v:02d}"))


def weekdays(values: frozenset[int]) -> str:
    """"" for every day, else "Mon..Fri", "Mon,Wed,Sun"..."""
    if len(values) == 7:
        return ""
    ordered = [DAY_ORDER.index(v) for v in values]
    return ",".join(_runs(sorted(ordered), lambda i: SYSTEMD_DAYS[DAY_ORDER[i]]))


def _runs(sorted_values: list[int], show) -> list[str]:
    """Consecutive runs of three or more as `a..b`, the rest one by one."""
    parts, i = [], 0
    while i < len(sorted_values):
        j = i
        while j + 1 < len(sorted_values) and sorted_values[j + 1] == sorted_values[j] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"{show(sorted_values[i])}..{show(sorted_values[j])}")
        else:
            parts.extend(show(v) for v in sorted_values[i:j + 1])
        i = j + 1
    return parts


def _some_date(dom: Field, month: Field) -> bool:
    """Does any month of `month` have one of the days of `dom` (February: 29)?"""
    return any(day <= MONTH_DAYS[m] for m in month.values for day in dom.values)


def _line(days: str, month: str, dom: str, hour: str, minute: str, zone: str | None) -> str:
    text = f"{days + ' ' if days else ''}*-{month}-{dom} {hour}:{minute}:00"
    return f"{text} {zone}" if zone else text


def oncalendar(schedule: Schedule, zone: str | None = None) -> list[str]:
    """The OnCalendar= values for a five-field schedule (not @reboot).
    NeverRuns when no date can ever match (`0 0 30 2 *`)."""
    minute = component(schedule.minute.values, 0, 59)
    hour = component(schedule.hour.values, 0, 23)
    month = component(schedule.month.values, 1, 12)
    dom, dow = schedule.dom, schedule.dow
    all_days, all_weekdays = len(dom.values) == 31, len(dow.values) == 7
    if not (dom.star or dow.star):  # cron's OR
        if all_days or all_weekdays:  # either side alone matches every day
            return [_line("", month, "*", hour, minute, zone)]
        lines = [_line(weekdays(dow.values), month, "*", hour, minute, zone)]
        if _some_date(dom, schedule.month):  # else that side never matches: drop it
            lines.append(_line("", month, component(dom.values, 1, 31, repeat=False), hour, minute, zone))
        return lines
    if not _some_date(dom, schedule.month):
        raise NeverRuns(f"day-of-month {dom.text} never occurs in month {schedule.month.text}, "
                        f"so cron never runs this entry")
    return [_line(weekdays(dow.values), month, component(dom.values, 1, 31, repeat=False), hour, minute, zone)]
