"""Durations as people write them in config files, and as systemd prints them.

parse_duration accepts Go/Telegraf style ("90s", "1m30s", "1.5h", "250ms") and the
systemd spelling ("5min", "1h 30min", "2d"), so a value copied from a unit file works.
"""

import json
import re

# Seconds per unit. systemd's time units (man systemd.time) are a superset of Telegraf's;
# "m" is minutes as in Go and Telegraf, months are only spelt "month"/"months".
_UNITS = {
    "us": 1e-6, "usec": 1e-6, "µs": 1e-6,
    "ms": 1e-3, "msec": 1e-3,
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
    "w": 604800.0, "week": 604800.0, "weeks": 604800.0,
    "month": 2629800.0, "months": 2629800.0,  # 30.44 days, as systemd
    "y": 31557600.0, "year": 31557600.0, "years": 31557600.0,  # 365.25 days, as systemd
}
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zµ]+)\s*")


def parse_duration(text: str) -> float:
    """Seconds in `text`; ValueError when it is not a duration (a bare number is not one)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{json.dumps(text)} is not a duration")
    total, pos = 0.0, 0
    while pos < len(text):
        match = _PART.match(text, pos)
        if not match or match.group(2) not in _UNITS:
            raise ValueError(f"{json.dumps(text)} is not a duration")
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return total


# Largest first; the same units and abbreviations as systemd's format_timespan().
_SPAN_UNITS = (
    ("y", 31557600_000000), ("month", 2629800_000000), ("w", 604800_000000),
    ("d", 86400_000000), ("h", 3600_000000), ("min", 60_000000),
    ("s", 1_000000), ("ms", 1000), ("us", 1),
)


def format_timespan_usec(usec: int) -> str:
    """systemd's spelling of a span, e.g. 5400000000 -> "1h 30min" (as in `systemctl show`)."""
    if usec <= 0:
        return "0"
    parts = []
    for name, size in _SPAN_UNITS:
        if usec >= size:
            count, usec = divmod(usec, size)
            parts.append(f"{count}{name}")
    return " ".join(parts)
