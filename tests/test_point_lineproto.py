"""exporter.point writes line protocol itself, escaped exactly as influxdb-client's Point
(which the agent no longer imports for it, issue 9): both must give the same bytes for
any measurement, tag, field and value, weird ones first."""

import math
import random

import pytest
from hypothesis import example, given, settings, strategies as st
from influxdb_client.client.write.point import Point as InfluxPoint, WritePrecision

from exporter import point as point_module
from exporter.point import SERIES_CACHE_SIZE, Point, _series, to_line_protocol

# influxdb-client warns about a measurement starting with "#"; the bytes are what count.
pytestmark = pytest.mark.filterwarnings("ignore::SyntaxWarning")

AWKWARD = ["", " ", ",", "=", '"', "\\", "\\\\", "a\\", "\n", "\t", "\r", "#x", "a b,c=d",
           'say "hi"\\', "é✓", "x\\ ", "=\\", "tail\\\\", "0", "true"]
NUMBERS = [0.0, -0.0, 1.0, -1.5, 1e16, 1e300, 1.5e-7, 123456789.125, 2.0**53, 0.1 + 0.2,
           math.nan, math.inf, -math.inf, 0, -1, 2**63 - 1, 2**64 + 5, -(2**70), True, False]


def theirs(points):
    lines = []
    for point in points:
        influx = InfluxPoint(point.measurement)
        for key, value in point.tags.items():
            influx.tag(key, value)
        for key, value in point.fields.items():
            influx.field(key, value)
        influx.time(point.time_ns, WritePrecision.NS)
        line = influx.to_line_protocol()
        if line:
            lines.append(line)
    return "".join(line + "\n" for line in lines)


def test_awkward_names_and_values():
    points = [Point(m, {k: v}, {k or "f": v, "n": 1}, 1795652373304864000)
              for m in AWKWARD if m for k in AWKWARD for v in AWKWARD]
    points += [Point("numbers", {"t": "x"}, {"v": v}, 7) for v in NUMBERS]
    points += [Point("only-bad-fields", {}, {"a": math.nan, "b": math.inf}, 0),
               Point("no-tags", {}, {"a": 1}, 0), Point("empty-tags", {"a": "", "b": ""}, {"x": 1})]
    ours = to_line_protocol(points)
    assert ours == theirs(points)
    assert "only-bad-fields" not in ours and "no-tags a=1i 0\n" in ours


@pytest.mark.parametrize("seed", range(5))
def test_random_points(seed):
    rng = random.Random(seed)
    alphabet = ' ,="\\\n\t\rabcxyz0é#'

    def text(n=6):
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, n)))

    def value():
        kind = rng.randrange(4)
        if kind == 0:
            return rng.choice(NUMBERS[:13]) * rng.choice([1, -1, 0.5, 3])
        if kind == 1:
            return rng.randint(-(2**70), 2**70)
        return rng.choice([True, False]) if kind == 2 else text(12)

    points = [Point(text() or "m", {text(): text() for _ in range(rng.randint(0, 4))},
                    {text() or "f": value() for _ in range(rng.randint(0, 5))},
                    rng.randint(0, 2**63)) for _ in range(2000)]
    assert to_line_protocol(points) == theirs(points)


def test_a_value_of_another_type_is_refused_like_influxdb_client():
    with pytest.raises(ValueError, match='of field: "f" is not supported'):
        to_line_protocol([Point("m", {}, {"f": [1]}, 0)])


# What repeats between samples is escaped once and kept: the series key (measurement +
# tags), field names, string values, the field order, a series' last field texts. The
# bytes must be those of escaping every point afresh, whatever was written before, including values that are equal as dict keys but
# not as text (1, True, 1.0) and caches that overflow.
_TAG_VALUES = st.one_of(st.text(' ,="\\\n\t\rabc0é', max_size=4), st.none(), st.integers(-1, 2),
                        st.booleans(), st.sampled_from([1.0, 0.0]))
_FIELD_VALUES = st.one_of(st.text(' ,="\\\nab', max_size=4), st.integers(-1, 2), st.booleans(),
                         st.sampled_from([1.0, 0.0, 0.5]))
_POINTS = st.lists(st.builds(
    Point, st.sampled_from(["m", "m x", "a,b", "t"]),
    st.dictionaries(st.sampled_from(["host", "a b", "k=", "", "timer"]), _TAG_VALUES, max_size=3),
    st.dictionaries(st.sampled_from(["f", "a b", "k=", 'q"', "x,y"]), _FIELD_VALUES, min_size=1,
                    max_size=3),
    st.integers(0, 2**63)), max_size=25)


def uncached(points):
    """to_line_protocol() with every cache bypassed: each name and value escaped afresh."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(point_module, "_cached_series", lambda p: _series(p.measurement, p.tags))
        patch.setattr(point_module, "_field_key",
                      lambda key: str(key).translate(point_module._ESCAPE_KEY))
        patch.setattr(point_module, "_string_value",
                      lambda value: value.translate(point_module._ESCAPE_STRING))
        patch.setattr(point_module, "_sorted_keys",
                      lambda fields: (sorted(fields), False))
        lines = [point_module._line(p, series=point_module._cached_series) for p in points]
    return "".join(line + "\n" for line in lines if line)


@settings(max_examples=300, deadline=None)
@given(earlier=_POINTS, points=_POINTS, size=st.sampled_from([1, 3, SERIES_CACHE_SIZE]))
@example(earlier=[Point("m", {"host": 1}, {"f": 0}, 0), Point("m", {"host": "1"}, {"f": 0}, 0)],
         points=[Point("m", {"host": True}, {"f": 0}, 0), Point("m", {"host": 1.0}, {"f": 0}, 0)],
         size=SERIES_CACHE_SIZE)
def test_cached_escaping_writes_the_bytes_of_escaping_afresh(earlier, points, size):
    with pytest.MonkeyPatch.context() as patch:
        for name in ("SERIES_CACHE_SIZE", "STRING_CACHE_SIZE", "FIELD_KEY_CACHE_SIZE",
                     "ORDER_CACHE_SIZE"):
            patch.setattr(point_module, name, size)
        for name in ("_series_cache", "_string_cache", "_field_key_cache", "_order_cache",
                     "_last_fields"):
            patch.setattr(point_module, name, {})
        to_line_protocol(earlier)  # fills the caches with other (and equal-keyed) entries
        first, again = to_line_protocol(points), to_line_protocol(points)
        assert len(point_module._series_cache) <= size
        assert len(point_module._string_cache) <= size
        assert len(point_module._field_key_cache) <= size
        assert len(point_module._order_cache) <= size
        assert len(point_module._last_fields) <= size
    assert first == again == uncached(points)
    if all(type(v) is str for p in points for v in p.tags.values()):
        assert first == theirs(points)


def test_a_series_key_is_escaped_once_and_reused():
    point_module._series_cache.clear()
    points = [Point("systemd_timer", {"host": "h", "timer": "a b.timer"}, {"x": i}, i) for i in range(3)]
    text = to_line_protocol(points)
    assert text.count("systemd_timer,host=h,timer=a\\ b.timer x=") == 3
    assert point_module._series_cache == {
        ("systemd_timer", ("host", "h"), ("timer", "a b.timer")): "systemd_timer,host=h,timer=a\\ b.timer"}


def test_a_series_reuses_the_texts_of_the_values_it_wrote_last_and_only_those():
    """The texts of a series' last line are reused for the very same value objects:
    an equal value of another type (1, True, 1.0), a changed one, a value now left out
    (None, nan) or new names are written afresh."""
    point_module._last_fields.clear()
    same = "a str kept"
    samples = [{"a": 1, "b": same, "c": 2.5}, {"a": True, "b": same, "c": 2.5},
               {"a": 1.0, "b": same, "c": float("nan")}, {"a": 1, "b": same, "c": None},
               {"a": 1, "b": same, "c": 3.5}, {"b": same, "a": 1, "c": 3.5},
               {"a": 1, "b": same}, {"a": 1, "b": same, "c": 3.5}]
    for fields in samples:
        point = Point("m", {"host": "h"}, fields, 7)
        assert to_line_protocol([point]) == theirs([point]), fields
    assert to_line_protocol([Point("m", {"host": "h"}, {"a": None}, 7)]) == ""


@pytest.mark.parametrize("text", ["", "\n", "a 1\n", "a 1", "a 1\nb 2\n", "\n\na 1\n\n\nb 2",
                                  "# c\na 1\n#d\n", "#only", "a s=\"x\ry\u2028z\" 1\n"])
def test_count_lines_counts_what_influxdb_takes_as_lines(text):
    from exporter.point import count_lines
    lines = [line for line in text.split("\n") if line]
    assert count_lines(text) == len(lines)
    assert count_lines(text, comments=False) == len([x for x in lines if not x.startswith("#")])



_SAMPLE_VALUES = st.one_of(_FIELD_VALUES, st.none(), st.just(float("nan")), st.floats(-1e3, 1e3))


@settings(max_examples=200, deadline=None)
@given(names=st.lists(st.sampled_from(["a", "b", "c", "d e", "f=", "g"]), min_size=1,
                      max_size=6, unique=True), data=st.data())
def test_a_series_written_sample_after_sample_writes_the_bytes_of_writing_it_afresh(names, data):
    """The frame of a series' unchanged texts (point._LastFields): whichever fields change
    from one sample to the next (to None, nan, another type, back), and in whichever
    order the fields are built, each line is the line written afresh."""
    point_module._last_fields.clear()
    values = {name: data.draw(_SAMPLE_VALUES) for name in names}
    for _sample in range(8):
        changing = data.draw(st.sets(st.sampled_from(names)))
        values = {**values, **{name: data.draw(_SAMPLE_VALUES) for name in changing}}
        if data.draw(st.booleans()):
            values = dict(reversed(values.items()))
        point = Point("m", {"host": "h"}, dict(values), 1)
        assert to_line_protocol([point]) == uncached([point])


@settings(max_examples=300, deadline=None)
@given(names=st.lists(st.sampled_from(["a", "b", "c", "d e", "f=", "g"]), min_size=1,
                      max_size=6, unique=True), data=st.data())
def test_a_reused_point_writes_the_bytes_of_writing_it_afresh(names, data):
    """Point.reused (base, moved), as SteadyPoint hands it over, mixed with plain points
    and with other bases: whichever names move (to None, nan, another type, back), a base
    kept over samples or replaced, each line is the line written afresh."""
    point_module._last_fields.clear()
    base = {name: data.draw(_SAMPLE_VALUES) for name in names}
    for _sample in range(10):
        if data.draw(st.booleans()):  # a new base (the point was worked out again)
            changing = data.draw(st.sets(st.sampled_from(names)))
            base = {**base, **{name: data.draw(_SAMPLE_VALUES) for name in changing}}
        if _sample == 0 or data.draw(st.booleans()):  # mostly the same names move again
            moved_names = data.draw(st.lists(st.sampled_from(names), unique=True))
        moved = {name: data.draw(_SAMPLE_VALUES) for name in moved_names}
        fields = {**base, **moved}
        reused = (base, moved) if data.draw(st.integers(0, 3)) else None  # mostly reused
        point = Point("m", {"host": "h"}, fields, 1, reused)
        assert to_line_protocol([point]) == uncached([point])


def test_a_reused_point_takes_the_frame_and_only_the_moved_texts(monkeypatch):
    """The shortcut is taken: once a line of the base was framed with the same names
    moving (a series' third line: the first is kept as nothing, the second as values),
    the next reused line formats only the moved fields."""
    point_module._last_fields.clear()
    base = {"a": 1.5, "b": "keep", "c": 7}
    for age in (1.0, 2.0, 2.5):
        to_line_protocol([Point("m", {"host": "h"}, {**base, "a": age}, 1, (base, {"a": age}))])
    formatted = []
    real = point_module._field
    monkeypatch.setattr(point_module, "_field", lambda k, v: formatted.append(k) or real(k, v))
    point = Point("m", {"host": "h"}, {**base, "a": 3.0}, 1, (base, {"a": 3.0}))
    assert to_line_protocol([point]) == 'm,host=h a=3,b="keep",c=7i 1\n'
    assert formatted == ["a"]


def test_a_value_no_line_can_hold_raises_again_in_the_next_line_of_its_series():
    """A refused value leaves no half-made frame behind: the same fields raise again,
    and the next good ones are written as afresh."""
    point_module._last_fields.clear()
    fields = {"a": 1.5, "b": 2.5, "c": "keep"}
    for age in (1.0, 2.0, 3.0):
        to_line_protocol([Point("m", {"host": "h"}, {**fields, "a": age}, 1)])
    bad = {**fields, "b": 9.75, "c": [1]}
    for age in (4.0, 4.5):  # only the age moves, as in the lines before
        with pytest.raises(ValueError):
            to_line_protocol([Point("m", {"host": "h"}, {**bad, "a": age}, 1)])
    good = Point("m", {"host": "h"}, {**fields, "a": 5.0, "b": 9.75}, 1)
    assert to_line_protocol([good]) == uncached([good])
