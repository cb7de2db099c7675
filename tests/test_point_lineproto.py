"""exporter.point writes line protocol itself, escaped exactly as influxdb-client's Point
(which the agent no longer imports for it, issue 9): both must give the same bytes for
any measurement, tag, field and value, weird ones first."""

import math
import random

import pytest
from influxdb_client.client.write.point import Point as InfluxPoint, WritePrecision

from exporter.point import Point, to_line_protocol

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
