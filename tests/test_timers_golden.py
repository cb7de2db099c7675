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
