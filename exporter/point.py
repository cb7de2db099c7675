"""The one data type collectors return, and its line-protocol serialisation.

Collectors build plain `Point`s; serialisation happens once per sample, so stdout, the
v1 /write body and the v2 write body are the same bytes.
"""

import math
import re
from itertools import compress
from operator import is_not
from typing import NamedTuple

FieldValue = bool | int | float | str


class Point(NamedTuple):
    """Immutable, as a frozen dataclass would be, and made at C speed: a 1000-timer
    sample makes a thousand of them (a frozen dataclass's __init__ sets each attribute
    through object.__setattr__: 0.74 against 0.28 us a point here).

    `reused`: (base, moved) when `fields` are {**base, **moved}, `base` a dict never
    changed once handed over: what a collector knows when it reuses its last point and
    only the clock moved (exporter.collectors.timers.SteadyPoint). It spares the
    serialiser finding out which values moved (_LastFields.reused_texts)."""
    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    time_ns: int = 0
    reused: tuple[dict, dict] | None = None


# Escaping exactly as influxdb-client's Point does (influxdb_client/client/write/point.py,
# 1.50): the same bytes, without importing that package on every agent. Importing it
# cost about 190 ms and 13 MB of RSS, a third of the agent's memory (issue 9); the
# InfluxDB v2 output still uses it. tests/test_point_lineproto.py compares both.
_ESCAPE_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_ESCAPE_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t",
                             "\r": r"\r"})
_ESCAPE_STRING = str.maketrans({'"': r'\"', "\\": r"\\"})


# Field names are a small fixed vocabulary: each escaped once (string names only, at most
# FIELD_KEY_CACHE_SIZE of them).
FIELD_KEY_CACHE_SIZE = 1024
_field_key_cache: dict[str, str] = {}


def _field_key(key) -> str:
    escaped = _field_key_cache.get(key) if type(key) is str else None
    if escaped is None:
        escaped = str(key).translate(_ESCAPE_KEY)
        if type(key) is str and len(_field_key_cache) < FIELD_KEY_CACHE_SIZE:
            _field_key_cache[key] = escaped
    return escaped


# String field values mostly repeat from sample to sample (a schedule, "success",
# "inactive"): the last STRING_CACHE_SIZE escaped ones are kept.
STRING_CACHE_SIZE = 8192
_string_cache: dict[str, str] = {}


def _string_value(value: str) -> str:
    escaped = _string_cache.get(value) if type(value) is str else None
    if escaped is None:
        escaped = value.translate(_ESCAPE_STRING)
        if type(value) is str:
            if len(_string_cache) >= STRING_CACHE_SIZE:
                del _string_cache[next(iter(_string_cache))]  # the oldest
            _string_cache[value] = escaped
    return escaped


def _field(key: str, value) -> str | None:
    kind = type(value)  # the exact built-in types first: most fields, fewest checks
    if kind is bool:
        return f"{_field_key(key)}={'true' if value else 'false'}"
    if kind is int:
        return f"{_field_key(key)}={value}i"
    if kind is str:
        return f'{_field_key(key)}="{_string_value(value)}"'
    if value is None:
        return None
    name, key = key, _field_key(key)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        text = str(value)
        # A whole number as a float loses its ".0", as influxdb-client writes it.
        return f"{key}={text[:-2] if text.endswith('.0') else text}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{key}={value}i"
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    if isinstance(value, str):
        return f'{key}="{_string_value(value)}"'
    raise ValueError(f'Type: "{type(value)}" of field: "{name}" is not supported.')


# The sorted field names of each set of names seen (a collector builds the same few).
ORDER_CACHE_SIZE = 256
_order_cache: dict[tuple, tuple] = {}


def _sorted_keys(fields: dict) -> tuple[list, bool]:
    """(the field names in order, whether all are str): one list shared by every point
    built alike."""
    names = tuple(fields)
    found = _order_cache.get(names)
    if found is None:
        found = (sorted(names), all(type(k) is str for k in names))
        if found[1]:
            if len(_order_cache) >= ORDER_CACHE_SIZE:
                _order_cache.clear()
            _order_cache[names] = found
    return found


def _fields(fields: dict) -> list[str]:
    """Each field's `name=value` text, in name order; None and non-finite floats left out."""
    texts = [_field(key, fields[key]) for key in _sorted_keys(fields)[0]]
    return [text for text in texts if text is not None]


class _LastFields:
    """A series' last fields: their names in order, their values, which of them changed
    from the line before (`moving`), and the text between those (`frame`); `base` and
    `moved_names` (in name order) when the frame is known to be that of a Point.reused
    base with those moving; `pending`: the moved values of the last reused line, not yet
    put into `values` (settle)."""
    __slots__ = ("order", "values", "moving", "frame", "base", "moved_names", "pending")

    def __init__(self, order: list, values: list):
        self.order, self.values = order, values
        self.moving: list[int] | None = None
        self.frame: list[str] = []
        self.base = self.moved_names = self.pending = None

    def reused_texts(self, reused: tuple[dict, dict]) -> list[str] | None:
        """The moved fields' texts of a Point.reused whose frame this is; None if not."""
        base, moved = reused
        names = self.moved_names
        if base is not self.base or len(moved) != len(names):
            return None
        try:  # as many names, each of ours among them: the same names
            values = list(map(moved.__getitem__, names))
        except KeyError:
            return None
        texts = list(map(_field, names, values))
        if None in texts:
            return None  # (a field left out: the line is made afresh, values as they were)
        self.pending = values
        return texts

    def settle(self) -> None:
        """Put the values a reused line left pending into `values`."""
        if self.pending is not None:
            for i, value in zip(self.moving, self.pending):
                self.values[i] = value
            self.pending = None

    def learn_base(self, reused: tuple[dict, dict] | None) -> None:
        """After a line was framed: whether its frame is that of its Point.reused base,
        with exactly the moved names moving (then the next such line takes
        reused_texts)."""
        self.base = self.moved_names = None
        if reused is not None and self.frame is not None:
            names = [self.order[i] for i in self.moving]
            if sorted(reused[1]) == names:
                self.base, self.moved_names = reused[0], names

    def texts(self) -> list[str | None]:
        return [_field(key, value) for key, value in zip(self.order, self.values)]

    def frame_around(self, moving: list[int]) -> list[str] | None:
        """The texts between the moving fields, commas included: len(moving) + 1 of
        them. None when a field is left out (None, nan): the line is then made afresh."""
        texts = self.texts()
        if None in texts:
            return None
        bounds, frame = [-1, *moving, len(texts)], []
        for j in range(len(moving) + 1):
            middle = ",".join(texts[bounds[j] + 1:bounds[j + 1]])
            before = "," if j > 0 else ""            # after the moving field before it
            after = "," if j < len(moving) else ""   # before the moving field after it
            frame.append(before + middle + after if middle else (
                "," if before and after else ""))
        return frame


# Per series, its _LastFields (None: written once; runs' series mostly are). A value that
# is the very object written last time (`is`: a field's value is a bool, int, float or
# str, never changed in place) has the same text. A point reused from the last sample
# (exporter.collectors.timers.SteadyPoint) has all but its two ages so: its line is its
# frame with two new texts, found by C-level comparisons, not thirty texts joined anew.
_last_fields: dict[tuple, _LastFields | None] = {}


def _series_fields(key: tuple, fields: dict, reused: tuple[dict, dict] | None = None) -> str:
    """The fields' text of a point of series `key` ("" when none is written)."""
    last = _last_fields.get(key, False)
    if reused is not None and last and last.base is not None:
        texts = last.reused_texts(reused)
        if texts is not None:
            return _framed(last.frame, texts)
    try:
        # As many names, each of the last ones among them: the same names.
        values = list(map(fields.__getitem__, last.order)) if last and len(
            fields) == len(last.order) else None
    except KeyError:
        values = None
    if values is None:
        order, str_keys = _sorted_keys(fields)
        if str_keys:
            if len(_last_fields) >= SERIES_CACHE_SIZE:
                del _last_fields[next(iter(_last_fields))]  # the oldest
            _last_fields[key] = None if last is False else _LastFields(
                order, [fields[k] for k in order])
        return ",".join(_fields(fields))
    last.settle()
    moving = list(compress(range(len(values)), map(is_not, values, last.values)))
    last.values = values
    if moving != last.moving:
        # Forgotten first: a value of a type no line can hold raises in frame_around,
        # and the next line must raise again, not reuse texts of older values.
        del _last_fields[key]
        last.moving, last.frame = moving, last.frame_around(moving)
        _last_fields[key] = last
    last.learn_base(reused)
    if last.frame is None:
        return ",".join(_fields(fields))
    if not moving:
        return last.frame[0]
    texts = [_field(last.order[i], values[i]) for i in moving]
    if None in texts:
        last.moving = last.base = None  # made again next time
        return ",".join(_fields(fields))
    return _framed(last.frame, texts)


def _framed(frame: list[str], texts: list[str]) -> str:
    """The frame's pieces with the moving fields' texts between them."""
    if len(texts) == 1:  # (most reused lines: one age moves)
        return frame[0] + texts[0] + frame[1]
    return "".join([piece for pair in zip(frame, texts) for piece in pair] + frame[-1:])


def _series(measurement, tags: dict) -> str:
    """`measurement,tag=value,...`: escaped, sorted, None and empty tags dropped."""
    escaped = []
    for key, value in sorted(tags.items()):
        if value is None:
            continue
        key, value = str(key).translate(_ESCAPE_KEY), str(value).translate(_ESCAPE_KEY)
        if value.endswith("\\"):
            value += " "
        if key and value:  # line protocol has no empty tag: dropped
            escaped.append(f"{key}={value}")
    measurement = str(measurement).translate(_ESCAPE_MEASUREMENT)
    return measurement + ("," + ",".join(escaped) if escaped else "")


# A series' escaped key is the same from sample to sample (a timer's tags do not change):
# kept, by (measurement, tags), for the last SERIES_CACHE_SIZE series written. Only keys
# of plain strings are kept: no other built-in value equals a string, so a hit is always
# the same text (1 and True would be one dict key, yet write "1" and "True").
SERIES_CACHE_SIZE = 8192
_series_cache: dict[tuple, str] = {}


def _series_key(point: Point, key: tuple | None = None) -> tuple | None:
    """The series' cache key, or None: not cached (see SERIES_CACHE_SIZE). `key`: the
    key already built, kept as the one key object of both caches."""
    key = key or (point.measurement, *point.tags.items())
    if key in _series_cache:
        return key
    if type(point.measurement) is str and all(
            type(k) is str and type(v) is str for k, v in point.tags.items()):
        if len(_series_cache) >= SERIES_CACHE_SIZE:
            del _series_cache[next(iter(_series_cache))]  # the oldest
        _series_cache[key] = _series(point.measurement, point.tags)
        return key
    return None


def _cached_series(point: Point) -> str:
    try:
        key = _series_key(point)
    except TypeError:  # an unhashable tag value: str() of it, uncached
        key = None
    return _series(point.measurement, point.tags) if key is None else _series_cache[key]


def _line(point: Point, series=_cached_series) -> str:
    return _joined(lambda: series(point), ",".join(_fields(point.fields)), point.time_ns)


def _joined(series, fields: str, time_ns) -> str:
    """`series fields time`; "" for a point without fields (it has no line)."""
    if not fields:
        return ""
    if not isinstance(time_ns, int):
        raise ValueError(time_ns)
    return f"{series()} {fields} {time_ns}"


def _reusing_line(point: Point) -> str:
    """_line(point), reusing the texts of the series' last fields (_series_fields)."""
    key = (point.measurement, *point.tags.items())
    try:
        series = _series_cache.get(key)
        if series is None and _series_key(point, key) is not None:
            series = _series_cache[key]
    except TypeError:  # an unhashable tag value
        series = None
    if series is None:
        return _line(point)
    return _joined(lambda: series, _series_fields(key, point.fields, point.reused), point.time_ns)


def to_line_protocol(points: list[Point]) -> str:
    """Newline-terminated line protocol, escaped as influxdb-client's own Point code
    escapes it (sorted tags and fields, empty tags and non-finite floats dropped)."""
    lines = [_reusing_line(point) for point in points]
    if "" in lines:  # a point without fields has no line
        lines = [line for line in lines if line]
    # One join, each line's "\n" with it: not a copy of every line with its "\n" first
    # (at 1000 timers that was 1000 more strings of ~670 bytes, each malloc'd, per sample).
    lines.append("")
    return "\n".join(lines)


# A line that is empty, or (for comments=False) a comment, after the first. One regular
# expression finds either: sre looks for its literal "\n" with memchr, about 3 x faster
# on a 1000-timer sample than `"\n\n" in text` (0.16 against 0.44 ms for 525 KB),
# which is slow for a needle that starts and ends with the text's most common character.
_EMPTY_LINE = re.compile("\n\n")
_EMPTY_OR_COMMENT_LINE = re.compile("\n[\n#]")


def count_lines(text: str, comments: bool = True) -> int:
    """The non-empty lines of line protocol, split at "\n" only, as InfluxDB splits it (a
    string field may hold a raw "\r"); comments=False: "#" lines are not counted. At C
    speed for text without empty or comment lines: every sample's text is counted."""
    if comments:
        plain = not text.startswith("\n") and _EMPTY_LINE.search(text) is None
    else:
        plain = not text.startswith(("\n", "#")) and _EMPTY_OR_COMMENT_LINE.search(text) is None
    if plain:
        return text.count("\n") + (0 if not text or text.endswith("\n") else 1)
    return sum(1 for line in text.split("\n") if line and (comments or not line.startswith("#")))
