"""Golden files: recorded D-Bus property sets in, whole line-protocol output compared.

Regenerate after an intended schema change with UPDATE_GOLDEN=1 and review the diff.
"""

import os
from pathlib import Path

import pytest

from exporter.collectors.timers import TimersCollector
from exporter.config import load_config
from exporter.point import to_line_protocol
from tests.timers_recording import loads

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("name", sorted(p.stem for p in GOLDEN.glob("*.json")))
def test_timer_points_match_golden(name):
    snapshot, now = loads((GOLDEN / f"{name}.json").read_text())
    config = load_config(None, {"TICK_EXPORTER_TIMERS_TIMEZONE": "UTC"}).timers
    collector = TimersCollector(None, config, "golden-host")
    got = to_line_protocol(collector.points(snapshot, now))
    expected_file = GOLDEN / f"{name}.lp"
    if os.environ.get("UPDATE_GOLDEN"):
        expected_file.write_text(got)
    assert got == expected_file.read_text()


@pytest.mark.parametrize("name", sorted(p.stem for p in GOLDEN.glob("*.json")))
def test_every_written_tag_and_field_is_documented_with_its_type(name):
    """docs/metrics.md is the schema (tests/metrics_schema.py reads it back): every tag and
    field the collector writes for these recordings is there, with the type written."""
    from tests.lineproto import parse
    from tests.metrics_schema import schema
    known = schema()
    kinds = {bool: "bool", int: "int", float: "float", str: "string"}
    for point in parse((GOLDEN / f"{name}.lp").read_text()):
        documented = known[point.measurement]
        assert set(point.tags) <= documented["tags"], point.tags
        for field, value in point.fields.items():
            assert documented["fields"].get(field) == kinds[type(value)], (point.measurement, field)
