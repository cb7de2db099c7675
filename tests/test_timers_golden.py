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


def _later(now, seconds: float):
    from dataclasses import replace
    step = int(seconds * 1e6)
    return replace(now, realtime_us=now.realtime_us + step, monotonic_us=now.monotonic_us + step)


def _reread(record, **service_properties):
    """The record as SystemdBus hands it over after reading a unit again: new objects."""
    from dataclasses import replace
    service = record.service and replace(record.service, properties={
        **record.service.properties, **service_properties})
    return replace(record, timer=replace(record.timer, properties=dict(record.timer.properties)),
                   service=service)


@pytest.mark.parametrize("name", sorted(p.stem for p in GOLDEN.glob("*.json")))
def test_a_sample_reusing_its_records_writes_what_working_everything_out_afresh_writes(name, monkeypatch):
    """RecordParts (worked out once per record object) and SteadyPoint (a point reused
    while nothing but the clock moves) are exact: samples of the same record objects,
    every few minutes for two days (elapses, graces running out), then of re-read records
    with a new run, give the bytes of a collector that works every point out afresh,
    memory and all."""
    from dataclasses import replace
    from exporter.collectors import timers as timers_module
    from exporter.sources.systemd_dbus import TimersSnapshot
    snapshot, now = loads((GOLDEN / f"{name}.json").read_text())
    config = load_config(None, {"TICK_EXPORTER_TIMERS_TIMEZONE": "UTC"}).timers
    reread = TimersSnapshot(snapshot.manager, [
        _reread(r, ExecMainStartTimestamp=now.realtime_us + 1_000_000,
                ExecMainExitTimestamp=now.realtime_us + 2_000_000, Result="exit-code",
                ExecMainStatus=3, ExecMainCode=1) if i % 2 else r
        for i, r in enumerate(snapshot.timers)])
    samples = [(snapshot, now), (snapshot, _later(now, 30)),
               (replace(snapshot, timers=list(snapshot.timers)), _later(now, 3600))]
    samples += [(snapshot, _later(now, 3600 + s)) for s in range(1733, 2 * 86400, 1733)]
    samples += [(snapshot, _later(now, 3600 + s)) for s in (86400 + 7, 3, 86400 * 2 + 9)]  # clock stepped back
    samples += [(reread, _later(now, 3 * 86400 + 5)), (reread, _later(now, 3 * 86400 + 6)),
                (reread, _later(now, 86400 * 5))]
    reusing = TimersCollector(None, config, "golden-host")
    afresh = TimersCollector(None, config, "golden-host")
    stood, stands = [], timers_module.SteadyPoint.stands
    monkeypatch.setattr(timers_module.SteadyPoint, "stands",
                        lambda self, *args: stood.append(stands(self, *args)) or stood[-1])
    def sample(collector, snapshot, now, remember=True):
        pending = [(timer, run.exit_us, later) for timer, _, run, later in collector.unwritten_runs(snapshot)]
        text = to_line_protocol(collector.points(snapshot, now))
        if not remember:
            collector._runs_recorded_for = None  # unwritten_runs looks at every record
        return pending, text

    written = [sample(reusing, s, t) for s, t in samples]
    made = []
    monkeypatch.setattr(timers_module.RecordParts, "made_from",
                        lambda self, *args: made.append(1) and False)
    monkeypatch.setattr(timers_module.SteadyPoint, "stands", lambda self, *args: False)
    assert [sample(afresh, s, t, remember=False) for s, t in samples] == written
    assert len(made) >= len(snapshot.timers) * (len(samples) - 1)  # never reused afresh
    assert len({text for _, text in written}) == len(samples)  # the samples do differ
    assert any(pending for pending, _ in written)  # and some had runs to look up
    assert sum(stood) > len(samples)  # and points were reused
