"""Names from the outside world survive line protocol: a property-based round trip of
generated tag and string-field values through the real InfluxDB 1.6.7.

Line protocol cannot carry two things in a tag value (docs/metrics.md, "Escaping"):
a raw newline/tab/carriage return (influxdb-client writes the two characters `\\n`, which
InfluxDB stores as such) and a trailing backslash (influxdb-client appends a space so the
line stays parseable; InfluxDB then stores a trailing space). String fields carry
everything exactly. Unit names never hit either case: systemd escapes them (\\x0a).
"""

import itertools
import json
import urllib.parse
import urllib.request

from hypothesis import HealthCheck, example, given, settings, strategies as st

from exporter.point import Point, to_line_protocol
from tests.lineproto import parse

SPECIALS = " ,=\"'\\\n\t\r@.:-_x\\x2d"
names = st.text(alphabet=st.sampled_from(list(SPECIALS)) | st.characters(
    blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40)
_counter = itertools.count(1)


def tag_as_stored(value: str) -> str:
    """What InfluxDB returns for a tag value written by influxdb-client."""
    stored = value.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    if stored.endswith("\\"):
        stored = stored[:-1] + " "
    return stored


def write_and_read(influxdb, db, point):
    body = to_line_protocol([point]).encode()
    request = urllib.request.Request(f"{influxdb.url}/write?db={db}&precision=ns", data=body,
                                     method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 204
    params = urllib.parse.urlencode({"db": db, "epoch": "ns",
                                     "q": f"SELECT * FROM names WHERE time = {point.time_ns}"})
    with urllib.request.urlopen(f"{influxdb.url}/query?{params}", timeout=10) as response:
        (series,) = json.load(response)["results"][0]["series"]
    (row,) = series["values"]
    return dict(zip(series["columns"], row))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(timer=names, container=names, text=names)
@example(timer="0", container="\\=", text="0")  # found by hypothesis: a backslash before "="
def test_generated_names_round_trip_through_influxdb(influxdb, timer, container, text):
    influxdb.create_database("escaping")
    point = Point("names", {"timer": timer, "container": container},
                  {"schedule": text, "n": 1}, next(_counter))
    row = write_and_read(influxdb, "escaping", point)
    assert row["timer"] == tag_as_stored(timer)
    assert row["container"] == tag_as_stored(container)
    assert row["schedule"] == text
    # and our own test reader agrees with InfluxDB's parser on string fields
    assert parse(to_line_protocol([point]))[0].fields["schedule"] == text


def test_realistic_unit_names_round_trip_exactly(influxdb):
    influxdb.create_database("escaping")
    for name in ["backup@home.timer", "my\\x2dbackup.timer", "backup@var-lib\\x20x.timer",
                 'odd name, "quoted"=x.timer', "C:\\path\\to.timer", "a\\ b,c\\=d.timer"]:
        row = write_and_read(influxdb, "escaping", Point("names", {"timer": name},
                                                         {"schedule": name}, next(_counter)))
        assert (row["timer"], row["schedule"]) == (name, name)
