"""The one data type collectors return, and its line-protocol serialisation.

Collectors build plain `Point`s; serialisation happens once per sample, so stdout, the
v1 /write body and the v2 write body are the same bytes.
"""

from dataclasses import dataclass, field

FieldValue = bool | int | float | str


@dataclass(frozen=True)
class Point:
    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    time_ns: int = field(default=0)


def to_line_protocol(points: list[Point]) -> str:
    """Newline-terminated line protocol, escaped by influxdb-client's own Point code.

    influxdb-client is imported here, not at module load: the import alone costs about
    190 ms and 30 MB RSS, which `check-config` and `--help` should not pay.
    """
    from influxdb_client.client.write.point import Point as InfluxPoint, WritePrecision

    lines = []
    for point in points:
        influx = InfluxPoint(point.measurement)
        for key, value in point.tags.items():
            # influxdb-client drops empty tag values itself; line protocol has no empty tag.
            influx.tag(key, value)
        for key, value in point.fields.items():
            influx.field(key, value)
        influx.time(point.time_ns, WritePrecision.NS)
        line = influx.to_line_protocol()
        if line:  # a point without fields has no line
            lines.append(line)
    return "".join(line + "\n" for line in lines)
