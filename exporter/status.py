"""`tick-exporter status`: the timers as a person reads them, like `systemctl list-timers`
with the health columns added, and the same data as JSON for scripts.

Pure functions of the points (measurement `systemd_timer`, docs/metrics.md) and a clock
passed in. Times are turned into dates by arithmetic on an aware UTC epoch, never
`datetime.fromtimestamp` or `time.localtime`, which overflow past 2038 where time_t is
32 bits (armhf).
"""

import json
import math
import os
import re
import unicodedata
from datetime import datetime, timedelta, timezone

from .point import Point
from .timer_health import HEALTHY

MEASUREMENT = "systemd_timer"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
HEALTHY_STATES = HEALTHY  # ok, running, inactive (not armed, and nobody expects it to be)
# Fields newer agents write; a point from an older one lacks them and they read as 0.
NEWER_FIELDS = {"expected_at": 0, "last_success": 0, "overdue_s": 0.0, "missed_runs": 0,
                "consecutive_failures": 0}
TAGS = ("timer", "service", "host", "manager")
HEADER = ("NEXT", "LEFT", "LAST", "PASSED", "UNIT", "ACTIVATES", "STATE", "RESULT",
          "LAST SUCCESS", "OVERDUE", "MISSED")
UNIT_COLUMN, STATE_COLUMN = HEADER.index("UNIT"), HEADER.index("STATE")
SEPARATOR = "  "
# The footer counts unhealthy timers in this order: worst news first.
FOOTER_ORDER = ("failed", "missed", "overrun", "late", "stopped", "removed")

RESET = "\x1b[0m"
COLORS = {
    "ok": "\x1b[32m",        # green
    "running": "\x1b[36m",   # cyan
    "late": "\x1b[33m",      # yellow
    "overrun": "\x1b[33m",
    "failed": "\x1b[31m",    # red
    "missed": "\x1b[31m",
    "stopped": "\x1b[33m",  # yellow: warnings, as the missed_backup alert
    "removed": "\x1b[33m",
    "inactive": "\x1b[90m",  # grey (bright black)
}
ANSI = re.compile(r"\x1b\[[0-9;]*m")

# systemd's weekday spelling (fixed, not the locale's).
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
# Seconds per unit, largest first: systemd's format_timespan() units and abbreviations.
SPAN_UNITS = (("y", 31557600), ("month", 2629800), ("w", 604800), ("d", 86400),
              ("h", 3600), ("min", 60), ("s", 1))


def format_span(seconds: float) -> str:
    """A duration in its two most significant units, as systemd: "2d 3h", "1h 5min",
    "45s". Truncated to whole seconds; the second unit is the one right below the
    first and is left out when zero ("1d", not "1d 0h")."""
    rest = max(int(seconds), 0)
    for index, (name, size) in enumerate(SPAN_UNITS):
        if rest >= size:
            count, rest = divmod(rest, size)
            text = f"{count}{name}"
            if index + 1 < len(SPAN_UNITS):
                below, below_size = SPAN_UNITS[index + 1]
                if rest // below_size:
                    text += f" {rest // below_size}{below}"
            return text
    return "0s"


def format_time(unix_s: int, zone=None) -> str:
    """"Wed 2026-11-25 04:00:00 UTC" in `zone` (a tzinfo; None = UTC); "-" for 0."""
    if not unix_s or unix_s < 0:
        return "-"
    try:
        when = (EPOCH + timedelta(seconds=int(unix_s))).astimezone(zone or timezone.utc)
    except (OverflowError, ValueError):  # past year 9999: no calendar date to print
        return f"@{int(unix_s)}"
    return f"{WEEKDAYS[when.weekday()]} {when:%Y-%m-%d %H:%M:%S} {when.tzname()}"


def format_relative(unix_s: int, now: int, future_suffix: str = "") -> str:
    """"5min ago" for a past time; "3h 12min" plus `future_suffix` for a future one."""
    if unix_s == now:
        return "now"
    if unix_s < now:
        return f"{format_span(now - unix_s)} ago"
    return format_span(unix_s - now) + future_suffix


def format_result(fields: dict) -> str:
    """The last run's outcome: "success", "exit-code (3)", "signal (15)"; "-" when the
    service has no finished run. A start that failed without running anything
    (start-limit-hit, resources) has no exit status but still shows its Result."""
    result = str(fields.get("last_result", ""))
    code = fields.get("last_exit_code", 0)
    if fields.get("last_exit_kind", "none") == "none":
        return result if result not in ("", "success") else "-"
    if not result:
        result = "-"
    return result if code == 0 else f"{result} ({code})"


def _clean(text: str) -> str:
    """Control characters escaped as systemd does (\\x1b): a unit name must not be able
    to move the cursor or change colours, nor break the alignment."""
    return "".join(ch if ch.isprintable() else
                   (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
                   for ch in text)


def _width(text: str) -> int:
    """Terminal columns of printable text: wide (CJK) characters take two, combining
    marks none."""
    return sum(0 if unicodedata.combining(ch) else
               2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _timers(points: list[Point]) -> list[Point]:
    timers = [p for p in points if p.measurement == MEASUREMENT]
    return sorted(timers, key=lambda p: (p.tags.get("timer", ""), p.tags.get("manager", ""),
                                         p.tags.get("host", "")))


def _field(point: Point, name: str, default=0):
    return point.fields.get(name, NEWER_FIELDS.get(name, default))


def _row(point: Point, now: int, zone) -> list[str]:
    f = point.fields
    next_elapse, last_trigger = int(f.get("next_elapse", 0)), int(f.get("last_trigger", 0))
    last_success = int(_field(point, "last_success"))
    overdue, missed = float(_field(point, "overdue_s")), int(_field(point, "missed_runs"))
    return [
        format_time(next_elapse, zone),
        format_relative(next_elapse, now) if next_elapse > 0 else "-",
        format_time(last_trigger, zone),
        format_relative(last_trigger, now, " left") if last_trigger > 0 else "-",
        _clean(point.tags.get("timer", "")) or "-",
        _clean(point.tags.get("service", "")) or "-",
        _clean(str(f.get("state", ""))) or "-",
        _clean(format_result(f)),
        format_relative(last_success, now, " left") if last_success > 0 else "never",
        format_span(overdue) if overdue > 0 else "-",
        str(missed) if missed else "-",
    ]


def _footer(timers: list[Point]) -> str:
    count = len(timers)
    text = f"{count} timer{'' if count == 1 else 's'} listed"
    if not count:
        return text + "."
    healthy = sum(1 for p in timers if p.fields.get("healthy") is True)
    unhealthy: dict[str, int] = {}
    for point in timers:
        if point.fields.get("healthy") is not True:
            state = str(point.fields.get("state", ""))
            key = state if state and state not in HEALTHY_STATES else "unhealthy"
            unhealthy[key] = unhealthy.get(key, 0) + 1
    order = [s for s in FOOTER_ORDER if s in unhealthy] + sorted(
        s for s in unhealthy if s not in FOOTER_ORDER)
    parts = [f"{healthy} healthy"] + [f"{unhealthy[s]} {s}" for s in order]
    return f"{text}: {', '.join(parts)}."


def read_time_s(points: list[Point], fallback_s: float) -> float:
    """The moment the timers were read, to render their ages against: the newest
    `systemd_timer` point's timestamp, which the collector takes after its read (issue
    16), so a run that ended during a slow read is "ago", never "left". `fallback_s`
    (the sample's time) when there is none."""
    stamps = [p.time_ns for p in points if p.measurement == MEASUREMENT and p.time_ns]
    return max(stamps) / 1e9 if stamps else fallback_s


def render_table(points: list[Point], now_s: float, color: bool, zone=None) -> str:
    """The `systemd_timer` points as an aligned table, one row per timer sorted by unit
    name, and a footer counting healthy and unhealthy timers. `zone` (a tzinfo, None =
    UTC) is where NEXT and LAST are printed. With `color`, STATE and UNIT are
    coloured by state (ANSI); the alignment is the same. No trailing newline."""
    timers = _timers(points)
    if not timers:
        return _footer(timers)
    now = math.floor(now_s)
    rows = [list(HEADER)] + [_row(p, now, zone) for p in timers]
    widths = [max(_width(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = []
    for number, row in enumerate(rows):
        state = timers[number - 1].fields.get("state", "") if number else ""
        cells = []
        for column, cell in enumerate(row):
            pad = " " * (widths[column] - _width(cell))
            if color and state in COLORS and column in (UNIT_COLUMN, STATE_COLUMN):
                cell = f"{COLORS[state]}{cell}{RESET}"
            cells.append(cell + pad)
        lines.append(SEPARATOR.join(cells).rstrip(" "))
    return "\n".join(lines + ["", _footer(timers)])


def render_why(points: list[Point], timer: str, zone=None) -> str:
    """`status --why TIMER`: the timer's state, its last run's result and the lines the
    newest failed run wrote to the journal (`last_failure_log`, docs/metrics.md). TIMER
    may omit ".timer". No trailing newline."""
    names = {timer, timer if timer.endswith(".timer") else timer + ".timer"}
    found = [p for p in _timers(points) if p.tags.get("timer") in names]
    if not found:
        return f"{_clean(timer)}: no such timer (`tick-exporter status` lists them)"
    lines = []
    for point in found:
        f = point.fields
        lines.append(f"{_clean(point.tags.get('timer', ''))} -> {_clean(point.tags.get('service', ''))}: "
                     f"{_clean(str(f.get('state', '-')))}, last run {_clean(format_result(f))}, "
                     f"ended {format_time(int(f.get('last_run_end', 0)), zone)}")
        log = f.get("last_failure_log")
        if log is None:
            lines.append("  (the journal is not read for this timer: [timers] journal)")
        elif not log:
            lines.append("  (no journal lines: the last run did not fail, or wrote nothing)")
        else:
            lines += [f"  {_clean(line)}" for line in str(log).splitlines()]
    return "\n".join(lines)


def _json_value(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN or infinity
    return value


def render_json(points: list[Point], now_s: float) -> str:
    """{"timers": [{"timer", "service", "host", "manager", <fields, sorted>}, ...],
    "healthy": bool}, timers sorted by unit name. Fields newer agents write are 0 when
    a point lacks them, so every timer has the same keys. No trailing newline.
    `now_s` is accepted for symmetry with render_table; nothing in the document is
    relative to it."""
    timers = []
    for point in _timers(points):
        entry = {tag: point.tags.get(tag, "") for tag in TAGS}
        entry.update((tag, value) for tag, value in sorted(point.tags.items()) if tag not in entry)
        merged = {**NEWER_FIELDS, **point.fields}
        entry.update((name, _json_value(merged[name])) for name in sorted(merged)
                     if name not in entry)
        timers.append(entry)
    containers = [{**{t: v for t, v in sorted(p.tags.items())}, **dict(sorted(p.fields.items()))}
                  for p in sorted((p for p in points if p.measurement == "container_memory"),
                                  key=lambda p: p.tags.get("container", ""))]
    return json.dumps({"timers": timers, "containers": containers, "problems": problems(points),
                       "healthy": exit_code(points) == 0}, indent=2)


def format_bytes(value: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value}B"


def _align(rows) -> str:
    """Plain rows as columns padded to the widest visible cell."""
    widths = [max(_width(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(SEPARATOR.join(cell + " " * (widths[i] - _width(cell))
                                     for i, cell in enumerate(row)).rstrip(" ") for row in rows)


def render_containers(points: list[Point]) -> str:
    """`container_memory` points as an aligned table: memory against the limit, working
    set, OOM kills. "" when there are none. No trailing newline."""
    rows = [("CONTAINER", "IMAGE", "MEMORY / LIMIT", "WORKING SET", "OOM KILLS")]
    for point in sorted((p for p in points if p.measurement == "container_memory"),
                        key=lambda p: p.tags.get("container", "")):
        fields = point.fields
        limit = fields.get("limit_bytes", 0)
        used = format_bytes(fields.get("usage_bytes", 0))
        memory = (f"{used} / {format_bytes(limit)} ({fields.get('usage_percent', 0):.0f}%)"
                  if limit else f"{used} / -")
        rows.append((_clean(point.tags.get("container", "")), _clean(point.tags.get("image", "")),
                     memory, format_bytes(fields.get("working_set_bytes", 0)),
                     str(fields.get("oom_kills", 0) or "-")))
    if len(rows) == 1:
        return ""
    return _align(rows)


def dns_remedy(points: list[Point]) -> str:
    """The filled-in fix when containers on Docker's public fallback fail to resolve
    (or could not be shown to resolve); "" otherwise."""
    from .dns_classify import remedy
    broken = [p.tags.get("container", "") for p in points if p.measurement == "container_dns"
              and p.fields.get("public_fallback") and not p.fields.get("ok")]
    if not broken:
        return ""
    upstreams = next((p.fields.get("upstreams", "") for p in points if p.measurement == "host_dns"), "")
    names = ", ".join(_clean(name) for name in sorted(broken))
    return (f"DNS: {names} use Docker's public DNS fallback and do not resolve.\n"
            + remedy([s for s in upstreams.split(",") if s]))


def render_dns(points: list[Point]) -> str:
    """container_dns as a table (for `tick-exporter doctor dns`)."""
    rows = [("CONTAINER", "NETWORK", "RESOLVER", "NAMESERVERS", "PROBES FAILED", "OK")]
    for point in sorted((p for p in points if p.measurement == "container_dns"),
                        key=lambda p: p.tags.get("container", "")):
        rows.append((_clean(point.tags.get("container", "")), point.tags.get("network_mode", ""),
                     point.tags.get("resolver_kind", ""), point.fields.get("nameservers", ""),
                     f"{point.fields.get('probes_failed', 0)}/{point.fields.get('probes', 0)}",
                     "yes" if point.fields.get("ok") else "NO"))
    if len(rows) == 1:
        return ""
    return _align(rows)


def problems(points: list[Point]) -> list[str]:
    """What the agent could not sample, with the reason (and the fix, where the
    collector knows it: a disabled memory cgroup names the cmdline.txt change)."""
    return [f"{p.tags.get('component', '?')}: {p.fields.get('last_error', 'failed')}"
            for p in points if p.measurement == "exporter" and p.fields.get("success") is False]


# Journal trouble is shown, not counted (exporter.collectors.run_logs.COMPONENT).
JOURNAL_COMPONENT = "journal"


def exit_code(points: list[Point]) -> int:
    """0 when every `systemd_timer` point is healthy (or there are none) and every
    collector could sample, else 1. The journal is not a collector: a host without one
    still gets its verdicts (its trouble is shown, not counted)."""
    counted = [p for p in points if not (p.measurement == "exporter"
                                         and p.tags.get("component") == JOURNAL_COMPONENT)]
    return 0 if all(p.fields.get("healthy") is True
                    for p in points if p.measurement == MEASUREMENT) and not problems(counted) \
        and all(p.fields.get("ok") is not False for p in points if p.measurement == "container_dns") \
        else 1


def should_color(stream) -> bool:
    """Colour on a terminal, unless NO_COLOR is set to anything non-empty
    (https://no-color.org) or TERM is "dumb"."""
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False
    return tty and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)
